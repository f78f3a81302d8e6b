"""A distributed run on the local compute target, end to end: 2 nodes × 2 processes all-reduce a tensor
with torch (CPU build, gloo) and log to one run."""
from __future__ import annotations

from nimbus import Experiment, ScriptRunConfig
from tests.e2e.test_script_runs import wait_until_ended

ALL_REDUCE = """\
import os

import torch
import torch.distributed as dist

from nimbus import Run

dist.init_process_group("gloo")  # env://: RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT come from the runner
rank, world = dist.get_rank(), dist.get_world_size()
assert rank == int(os.environ["NIMBUS_RANK"]) and world == 4
tensor = torch.tensor([rank + 1.0])
dist.all_reduce(tensor)
total = tensor.item()
assert total == 10.0, total
print(f"rank {rank} of {world} (node {os.environ['NODE_RANK']}): sum {total}", flush=True)

run = Run.get_context()
run.log("sum", total)
run.log("rank", rank)
if rank == 0:
    os.makedirs("outputs", exist_ok=True)
    with open("outputs/result.txt", "w") as out:
        out.write(f"{total}\\n")
run.flush()
dist.destroy_process_group()
"""


def test_four_ranks_all_reduce_a_tensor_and_log_to_one_run(workspace, tmp_path):
    # Given a script that all-reduces rank + 1 over every rank
    source = tmp_path / "src"
    source.mkdir()
    (source / "allreduce.py").write_text(ALL_REDUCE)

    # When it runs on 2 nodes × 2 processes
    config = ScriptRunConfig(source_directory=source, script="allreduce.py", node_count=2, process_count_per_node=2)
    run = Experiment(workspace, "distributed").submit(config)
    details = wait_until_ended(run, timeout=180)

    # Then the run completed, with every rank's points in one series, tagged with their rank
    assert details["status"] == "Completed", details.get("error")
    ranks = run.get_metric_history("rank")
    assert sorted(ranks["values"]) == [0.0, 1.0, 2.0, 3.0]
    assert ranks["ranks"] == [int(value) for value in ranks["values"]]
    sums = run.get_metric_history("sum")
    assert sums["values"] == [10.0] * 4 and sorted(sums["ranks"]) == [0, 1, 2, 3]

    # And rank 0 logged to stdout, each other rank to its own stream; rank 0's outputs were uploaded
    assert "rank 0 of 4 (node 0): sum 10.0" in run.get_logs("stdout")["text"]
    streams = {s["stream"] for s in run.get_log_streams()}
    assert {"stdout", "rank-1", "rank-2", "rank-3"} <= streams
    assert "rank 3 of 4 (node 1): sum 10.0" in run.get_logs("rank-3")["text"]
    assert "outputs/result.txt" in run.get_file_names()


def test_cancel_ends_every_rank(workspace, platform, tmp_path):
    import time

    import psutil

    # Given four ranks that record their process ids (in the run's own folder, all a run may write) and sleep
    source = tmp_path / "src"
    source.mkdir()
    (source / "sleep.py").write_text(
        "import os, pathlib, time\n"
        "pathlib.Path('pids').mkdir(exist_ok=True)\n"
        "pathlib.Path('pids', os.environ['RANK']).write_text(str(os.getpid()))\n"
        "time.sleep(120)\n")
    config = ScriptRunConfig(source_directory=source, script="sleep.py", node_count=2, process_count_per_node=2)
    run = Experiment(workspace, "distributed").submit(config)
    pids = platform.home / "jobs" / run.id / "code" / "pids"
    deadline = time.time() + 60
    while not (pids.is_dir() and len(list(pids.iterdir())) >= 4) and time.time() < deadline:
        time.sleep(0.1)
    ranks = [psutil.Process(int(path.read_text())) for path in sorted(pids.iterdir())]
    assert len(ranks) == 4

    # When the run is canceled
    run.cancel()

    # Then no rank is left running
    _, alive = psutil.wait_procs(ranks, timeout=15)
    assert alive == [] and run.get_status() == "Canceled"
