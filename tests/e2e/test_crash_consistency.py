"""Crash consistency, end to end: bench/durability.py on a small scale (two writers, one SIGKILL).

Every write the platform acknowledged must be stored exactly once with its bytes, the SQLite file must
pass its integrity check after the kill, no temp file may be left, the script run that lived through
the kill must be adopted, the one whose process died meanwhile ended, and the scoring host replaced.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_acknowledged_writes_and_orphans_survive_a_sigkill_of_the_platform():
    finished = subprocess.run([sys.executable, str(ROOT / "bench" / "durability.py"), "--writers", "2", "--kills", "1",
                               "--seconds", "6", "--seed", "7"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    assert finished.returncode == 0 and result["ok"], (result, finished.stderr[-3000:])
    assert result["kills"] == 1 and result["acknowledged_points"] > 0
    assert result["acknowledged_outputs"] > 0 and result["acknowledged_models"] > 0
    assert (result["lost"], result["duplicated"], result["torn_blobs"], result["temp_files_left"]) == (0, 0, 0, 0)
    assert result["integrity_ok"] == result["integrity_checks"] == 2
    assert (result["runs_adopted"], result["runs_ended"]) == (1, 1)
    assert (result["hosts_ended_and_replaced"], result["hosts_left_unsupervised"]) == (1, 0)
    assert result["processes_left_after_stop"] == 0
