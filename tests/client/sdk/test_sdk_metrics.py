"""Logging metrics through the buffer and reading them back."""
from __future__ import annotations

import io
import math

import pytest

from nimbus import ConflictError, Experiment, InvalidError, Run
from nimbus.metrics_buffer import MetricBatch, RunStream, new_batch_id


@pytest.fixture
def run(workspace):
    return Experiment(workspace, "metrics").start_logging()


def stored_points(platform, workspace, run, name):
    return platform.services.metrics.history(workspace.name, run.id, name)["values"]


def test_every_metric_kind_round_trips(run, tmp_path):
    run.log("loss", 0.5)
    run.log("loss", math.nan)
    run.log("loss", math.inf)
    run.log("loss", -math.inf)
    run.log("lr", 0.1)
    run.log_list("sizes", [1, 2.5, math.nan])
    run.log_row("eval", epoch=1, acc=0.5)
    run.log_row("eval", epoch=2, acc=0.75)
    run.log_table("confusion", {"pred": [0, 1], "true": [1, 1]})
    image = tmp_path / "plot.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    run.log_image("curve", path=image)
    run.complete()

    metrics = run.get_metrics()
    loss = metrics["loss"]
    assert loss[0] == 0.5 and math.isnan(loss[1]) and loss[2:] == [math.inf, -math.inf]
    assert metrics["lr"] == 0.1
    assert metrics["sizes"][:2] == [1, 2.5] and math.isnan(metrics["sizes"][2])
    assert metrics["eval"] == {"epoch": [1, 2], "acc": [0.5, 0.75]}
    assert metrics["confusion"] == {"pred": [0, 1], "true": [1, 1]}
    assert metrics["curve"].startswith("images/") and metrics["curve"].endswith(".png")
    assert run.get_metrics("lr") == {"lr": 0.1}
    assert run.get_metrics("missing") == {}


def test_a_figure_is_logged_as_png(run):
    class Figure:  # what log_image needs from a matplotlib figure
        def savefig(self, stream: io.BytesIO, format: str) -> None:
            stream.write(b"\x89PNG figure " + format.encode())

    run.log_image("figure", plot=Figure())
    run.complete()
    assert run.get_metrics()["figure"].endswith(".png")


def test_steps_count_up_per_metric_unless_given(run):
    run.log("a", 1.0)
    run.log("b", 1.0)
    run.log("a", 2.0)
    run.log("a", 3.0, step=10)
    run.log("a", 4.0)
    run.flush()
    assert run.get_metric_history("a")["steps"] == [0, 1, 10, 11]
    assert run.get_metric_history("b")["steps"] == [0]


def test_complete_sends_what_is_still_buffered(run, metrics, platform, workspace):
    metrics.interval = 3600  # the sender thread would not send on its own during this test
    for step in range(500):
        run.log("loss", 1.0 / (step + 1))
    run.complete()
    assert len(stored_points(platform, workspace, run, "loss")) == 500
    assert run.status == "Completed"


def test_a_retried_batch_is_stored_once(run, metrics, workspace, platform):
    stream = RunStream(workspace.client, run._metrics_path)
    batch = MetricBatch(stream, [{"name": "acc", "type": "scalar", "values": [0.1, 0.2], "steps": [0, 1],
                                  "timestamps": [1.0, 2.0]}], points=2, batch_id=new_batch_id())
    metrics.send(batch)
    metrics.send(batch)  # as after a lost reply
    assert stored_points(platform, workspace, run, "acc") == [0.1, 0.2]


def test_large_backlogs_go_in_several_ordered_batches(run, metrics, platform, workspace):
    metrics.max_points, metrics.max_bytes, metrics.interval = 300, 2000, 3600
    for step in range(1000):
        run.log("x", float(step))
    run.flush()
    assert stored_points(platform, workspace, run, "x") == [float(s) for s in range(1000)]


def test_flush_raises_what_the_service_refused(run):
    run.complete()
    run.log("late", 1.0)
    with pytest.raises(ConflictError, match="takes no more metrics") as refused:
        run.flush()
    assert refused.value.status == 409 and "1 metric points were not stored" in refused.value.message
    run.flush()  # reported once


def test_log_refuses_bad_values_at_once(run):
    with pytest.raises(InvalidError):
        run.log("acc", "high")
    with pytest.raises(InvalidError):
        run.log("acc", 1.0, step=-1)
    with pytest.raises(InvalidError):
        run.log("", 1.0)
    run.log("acc", 1)
    with pytest.raises(InvalidError, match="scalar"):
        run.log_list("acc", [1, 2])
    with pytest.raises(InvalidError):
        run.log_row("row", nested=[1, 2])
    run.complete()


def test_numpy_like_values_are_converted(run):
    class Scalar:  # numpy scalars and arrays have tolist(); numbers also have __float__
        def __init__(self, value):
            self.value = value

        def __float__(self):
            return float(self.value)

        def tolist(self):
            return self.value

    run.log("n", Scalar(3))
    run.log_list("arr", Scalar([1, 2, 3]))
    run.complete()
    assert run.get_metrics() == {"n": 3.0, "arr": [1, 2, 3]}


def test_metrics_of_a_run_are_read_by_another_process_view(run, workspace):
    run.log("acc", 0.9)
    run.complete()
    assert Run.get(workspace, run.id).get_metrics() == {"acc": 0.9}


def test_batch_ids_are_time_ordered_and_strictly_increasing():
    ids = [new_batch_id() for _ in range(2000)]
    assert all(len(i) == 22 and int(i, 16) >= 0 for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_points_for_an_unreachable_service_are_given_up(metrics, monkeypatch):
    import socket

    from nimbus import ServiceUnavailableError, Workspace
    from nimbus.client import ApiClient

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics.retry_seconds, metrics.max_points, metrics.interval = 0.3, 10, 3600
    offline = Run(Workspace("default", client=ApiClient(f"http://127.0.0.1:{port}", "nmb_t")), "r1")
    for step in range(100):
        offline.log("x", float(step))
    with pytest.raises(ServiceUnavailableError, match="100 metric points were not stored: cannot reach"):
        offline.flush()


def test_each_rank_of_a_distributed_run_tags_its_points(workspace, run, monkeypatch):
    from nimbus import metrics_buffer

    # Given three processes' worth of logging: ranks 1 and 0 (NIMBUS_RANK set by the runner), then none
    for rank in ("1", "0", None):
        if rank is None:
            monkeypatch.delenv("NIMBUS_RANK", raising=False)
        else:
            monkeypatch.setenv("NIMBUS_RANK", rank)
        monkeypatch.setattr(metrics_buffer, "_buffer", metrics_buffer.MetricsBuffer(retry_seconds=5))
        Run(workspace, run.id).log("loss", float(rank or 9))
        Run(workspace, run.id).flush()

    # Then the points share one series and carry their ranks
    history = run.get_metric_history("loss")
    assert list(zip(history["values"], history["ranks"])) == [(1.0, 1), (0.0, 0), (9.0, None)]
