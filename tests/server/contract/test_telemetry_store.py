"""Scoring telemetry written by the recorder and read by the service, on SQLite and on DynamoDB (moto)."""
from __future__ import annotations

import pytest

from chalicelib.errors import Invalid
from chalicelib.scoring.telemetry_recorder import TelemetryRecorder, bucket_ms, bucket_of
from chalicelib.domain.context import Context
from chalicelib.services.endpoint_telemetry import EndpointTelemetry
from chalicelib.store.table import Query

T0 = 1_800_000_000.0  # a minute boundary


def test_flush_then_summary(table, blobs, settings):
    now = [T0 - 3 * 3600]  # three hours ago: outside a 60-minute window
    recorder = TelemetryRecorder("ws", "ep", clock=lambda: now[0])
    recorder.record("blue", 200, 5.0)
    recorder.flush(table)
    now[0] = T0 - 30 * 60
    for _ in range(90):
        recorder.record("blue", 200, 2.0)
    for _ in range(10):
        recorder.record("blue", 500, 200.0)
    now[0] = T0 + 59  # the current minute counts
    for _ in range(10):
        recorder.record("green", 200, 20.0)
    recorder.flush(table)
    # Another process (a second sandbox) writing the same minute adds to it.
    other = TelemetryRecorder("ws", "ep", clock=lambda: now[0])
    other.record("green", 504, 1000.0)
    other.flush(table)
    TelemetryRecorder("ws", "other-ep", clock=lambda: now[0]).record("blue", 200, 1.0)  # never flushed

    telemetry = EndpointTelemetry(Context(table, blobs, settings, clock=lambda: T0 + 59))
    summary = telemetry.summary("ws", "ep", minutes=60)
    assert summary == {
        "window_minutes": 60, "requests": 111, "errors": 11,
        "p50_ms": round(bucket_ms(bucket_of(2.0)), 3), "p95_ms": round(bucket_ms(bucket_of(200.0)), 3),
        "deployments": {
            "blue": {"requests": 100, "errors": 10, "p50_ms": round(bucket_ms(bucket_of(2.0)), 3),
                     "p95_ms": round(bucket_ms(bucket_of(200.0)), 3)},
            "green": {"requests": 11, "errors": 1, "p50_ms": round(bucket_ms(bucket_of(20.0)), 3),
                      "p95_ms": round(bucket_ms(bucket_of(1000.0)), 3)},
        },
    }
    assert abs(summary["p50_ms"] - 2.0) <= 0.1
    wide = telemetry.summary("ws", "ep", minutes=240)
    assert wide["requests"] == 112 and wide["deployments"]["blue"]["requests"] == 101
    assert telemetry.summary("ws", "ep", minutes=1)["deployments"].keys() == {"green"}
    assert telemetry.summary("ws", "nothing", minutes=60) == {
        "window_minutes": 60, "requests": 0, "errors": 0, "p50_ms": None, "p95_ms": None, "deployments": {}}
    with pytest.raises(Invalid):
        telemetry.summary("ws", "ep", minutes=0)

    assert telemetry.delete_endpoint("ws", "ep") == 3
    assert list(table.query_all(Query("TELE#ws#ep"))) == []
    assert telemetry.summary("ws", "ep", minutes=240)["requests"] == 0
