"""The runner running a distributed script: one process per rank, supervised as one (no torch: plain scripts)."""
from __future__ import annotations

import threading
import time

import psutil
import pytest

from nimbus.runtime import ranks
from nimbus.exceptions import ConflictError
from nimbus.runtime.runner import EXIT_STOPPED
from tests.runtime.test_runner import make_runner

TWO_BY_TWO = {"node_count": 2, "process_count_per_node": 2}


@pytest.fixture(autouse=True)
def short_grace(monkeypatch):
    monkeypatch.setattr(ranks, "FAILURE_GRACE", 0.5)


def rank_pids(tmp_path) -> list[int]:
    """The rank processes' ids, from the pid files the scripts below write."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        files = sorted((tmp_path / "code").glob("pid-*"))
        if len(files) == 4 and all(f.read_text() for f in files):
            return [int(f.read_text()) for f in files]
        time.sleep(0.05)
    raise AssertionError("the ranks did not all start")


def running(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_every_rank_runs_with_its_environment_and_logs_to_its_own_stream(tmp_path):
    script = (
        "import os, sys\n"
        "rank = int(os.environ['RANK'])\n"
        "names = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'NODE_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'NIMBUS_RANK')\n"
        "print(' '.join(os.environ[n] for n in names), os.environ['MASTER_PORT'].isdigit(), os.environ['NIMBUS_RUN_ID'] != '')\n"
        "print(f'warning from {rank}', file=sys.stderr)\n"
        "if rank == 0:\n"
        "    open('outputs/result.txt', 'w').write('done')\n"
    )
    runner, api = make_runner(tmp_path, {"train.py": script}, {"script": "train.py", **TWO_BY_TWO})

    assert runner.execute() == 0

    assert api.status_names() == ["Preparing", "Running", "Finalizing", "Completed"]
    assert api.log_text("stdout") == "0 4 0 0 2 127.0.0.1 0 True True\n"
    assert api.log_text("stderr") == "warning from 0\n"
    for rank in (1, 2, 3):
        text = api.log_text(f"rank-{rank}")
        assert f"{rank} 4 {rank % 2} {rank // 2} 2 127.0.0.1 {rank} True True\n" in text
        assert f"warning from {rank}\n" in text
    assert api.uploads == {"outputs/result.txt": b"done"}  # the shared folder, uploaded once
    assert len(api.metrics["duration_s"]) == 1  # the runner's own metrics, once for the run


def test_a_failing_rank_fails_the_run_by_name_and_the_others_are_ended(tmp_path):
    script = (
        "import os, sys, time\n"
        "rank = int(os.environ['RANK'])\n"
        "open(f'pid-{rank}', 'w').write(str(os.getpid()))\n"
        "if rank == 2:\n"
        "    while len([n for n in os.listdir('.') if n.startswith('pid-')]) < 4:\n"
        "        time.sleep(0.02)\n"
        "    print('rank 2 lost its data', file=sys.stderr)\n"
        "    sys.exit(3)\n"
        "time.sleep(60)\n"
    )
    runner, api = make_runner(tmp_path, {"train.py": script}, {"script": "train.py", **TWO_BY_TWO})
    started = time.monotonic()

    assert runner.execute() == 0

    assert time.monotonic() - started < 15  # the grace, not the others' 60 s
    assert api.status_names() == ["Preparing", "Running", "Finalizing", "Failed"]
    error = api.statuses[-1]["error"]
    assert error["message"] == "train.py rank 2 exited with code 3"
    assert error["rank"] == 2 and error["exit_code"] == 3
    assert error["stderr_tail"] == "rank 2 lost its data"
    assert running(rank_pids(tmp_path)) == []


def test_stopping_the_runner_ends_every_rank(tmp_path):
    script = "import os, time\nopen(f\"pid-{os.environ['RANK']}\", 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    runner, api = make_runner(tmp_path, {"sleep.py": script}, {"script": "sleep.py", **TWO_BY_TWO})

    def stop_once_started():
        rank_pids(tmp_path)
        runner.stop()

    threading.Thread(target=stop_once_started, daemon=True).start()
    started = time.monotonic()

    assert runner.execute() == EXIT_STOPPED

    assert time.monotonic() - started < 15
    assert api.status_names() == ["Preparing", "Running"]
    assert running(rank_pids(tmp_path)) == []


def test_a_run_closed_by_the_service_ends_every_rank_quietly(tmp_path):
    script = "import os, time\nfor i in range(600):\n    print(os.environ['RANK'], i, flush=True)\n    time.sleep(0.1)\n"
    runner, api = make_runner(tmp_path, {"slow.py": script}, {"script": "slow.py", **TWO_BY_TWO})

    def canceled_once_logging(method, path, body):
        if "/logs/rank-3" in path:
            api.details["status"] = "Canceled"
            return ConflictError("run is Canceled: its logs are closed")
        return None

    api.fail = canceled_once_logging
    started = time.monotonic()

    assert runner.execute() == 0

    assert time.monotonic() - started < 15
    assert api.status_names() == ["Preparing", "Running"]
    assert all(process.process.poll() is not None for process in runner._script._ranks.values())


def test_a_run_asking_for_more_batch_nodes_than_it_got_fails_in_preparation(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_BATCH_JOB_NODE_INDEX", "0")
    monkeypatch.setenv("AWS_BATCH_JOB_NUM_NODES", "3")
    runner, api = make_runner(tmp_path, {"t.py": "print(1)"}, {"script": "t.py", **TWO_BY_TWO})

    assert runner.execute() == 0

    assert api.status_names() == ["Preparing", "Failed"]
    assert "asks for 2 nodes but the Batch job has 3" in api.statuses[-1]["error"]["message"]


@pytest.fixture
def child_node(monkeypatch):
    """This runner on the second node of a two-node Batch job: it holds ranks 2 and 3 of TWO_BY_TWO."""
    monkeypatch.setenv("AWS_BATCH_JOB_NODE_INDEX", "1")
    monkeypatch.setenv("AWS_BATCH_JOB_MAIN_NODE_INDEX", "0")
    monkeypatch.setenv("AWS_BATCH_JOB_NUM_NODES", "2")
    monkeypatch.setenv("AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS", "127.0.0.1")


def test_a_child_node_runs_its_ranks_and_leaves_the_status_and_outputs_to_the_main_node(tmp_path, child_node):
    script = (
        "import os, sys\n"
        "rank = int(os.environ['RANK'])\n"
        "print(rank, os.environ['NODE_RANK'], os.environ['WORLD_SIZE'], os.environ['MASTER_ADDR'])\n"
        "print(f'warning from {rank}', file=sys.stderr)\n"
        "open(f'outputs/result-{rank}.txt', 'w').write('done')\n"
    )
    runner, api = make_runner(tmp_path, {"train.py": script}, {"script": "train.py", **TWO_BY_TWO})

    assert runner.execute() == 0

    assert api.statuses == []
    assert api.uploads == {}
    assert api.metrics == {}  # the run's standard metrics are the main node's to log
    assert sorted(api.logs) == ["rank-2", "rank-3"]
    for rank in (2, 3):
        text = api.log_text(f"rank-{rank}")
        assert f"{rank} 1 4 127.0.0.1\n" in text and f"warning from {rank}\n" in text
    assert (tmp_path / "code" / "train.py").read_text() == script  # prepared all the same


def test_a_failing_rank_on_a_child_node_fails_the_run_naming_the_rank_and_node(tmp_path, child_node):
    script = (
        "import os, sys\n"
        "if os.environ['RANK'] == '3':\n"
        "    print('rank 3 lost its data', file=sys.stderr)\n"
        "    sys.exit(3)\n"
    )
    runner, api = make_runner(tmp_path, {"train.py": script}, {"script": "train.py", **TWO_BY_TWO})

    assert runner.execute() == 3

    assert api.status_names() == ["Failed"]
    error = api.statuses[-1]["error"]
    assert error["message"] == "train.py rank 3 on node 1 exited with code 3"
    assert error["rank"] == 3 and error["node"] == 1 and error["exit_code"] == 3
    assert error["stderr_tail"] == "rank 3 lost its data"
    assert api.uploads == {}
    # A child node never holds the run: it reports with its Batch attempt only, not as the main node's runner
    assert api.statuses[-1]["attempt"] == 1 and "runner_id" not in api.statuses[-1]


def test_a_child_node_whose_run_already_ended_reports_its_failing_rank_quietly(tmp_path, child_node):
    script = "import os, sys\nsys.exit(5 if os.environ['RANK'] == '2' else 0)\n"
    runner, api = make_runner(tmp_path, {"train.py": script}, {"script": "train.py", **TWO_BY_TWO})
    api.details["status"] = "Completed"

    def ended(method, path, body):
        return ConflictError("run is Completed") if path.endswith("/status") else None

    api.fail = ended

    assert runner.execute() == 5

    assert api.statuses == []
    assert [path for method, path, body in api.calls if path.endswith("/status")]  # it tried, then let it be


def test_only_a_batch_child_node_is_not_the_main_node():
    assert ranks.main_node({})
    assert ranks.main_node({"AWS_BATCH_JOB_NODE_INDEX": "0"})
    assert ranks.main_node({"AWS_BATCH_JOB_NODE_INDEX": "2", "AWS_BATCH_JOB_MAIN_NODE_INDEX": "2"})
    assert not ranks.main_node({"AWS_BATCH_JOB_NODE_INDEX": "1", "AWS_BATCH_JOB_MAIN_NODE_INDEX": "0"})
    assert ranks.main_node({"AWS_BATCH_JOB_NODE_INDEX": "x"})  # planning fails, and is reported in full
