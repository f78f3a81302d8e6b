"""The soak benchmark on a small scale: 15 seconds of its mixed load, every request answered.

The 30-minute run (`bench/soak.py`) is what judges latency and memory; this keeps the benchmark
itself working and the platform free of errors under the same mix.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_fifteen_seconds_of_mixed_load_give_no_error_and_lose_no_point():
    finished = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--duration", "15"], cwd=ROOT,
                              capture_output=True, text=True, timeout=240)
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    assert finished.returncode == 0 and result["ok"], (result, finished.stderr[-3000:])
    assert set(result["requests"]) == {"ingest", "search", "score", "register", "submit"}
    assert result["errors_total"] == 0 and result["points_lost"] == 0 and result["runs_not_completed"] == 0
    assert result["points_acknowledged"] > 0 and result["runs_submitted"] >= 1
    assert all(figures["end_n"] > 0 for kind, figures in result["latency"].items() if kind != "submit")
    assert len(result["rss_samples"]) >= 10 and result["rss_mib"]["growth_judged"] is False


def test_the_soak_is_bounded_to_thirty_minutes():
    refused = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--duration", "1801"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--duration" in refused.stderr
