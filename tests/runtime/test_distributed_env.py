"""Where a distributed run's ranks go and what each rank's environment holds (pure: no processes)."""
from __future__ import annotations

import socket

import pytest

from nimbus.metrics_buffer import process_rank
from nimbus.runtime.ranks import DEFAULT_MASTER_PORT, PlacementError, free_port, plan, stream_of

TWO_BY_TWO = {"script": "train.py", "node_count": 2, "process_count_per_node": 2}


def test_locally_one_runner_starts_every_rank_with_the_torch_variables():
    placement = plan(TWO_BY_TWO, {}, pick_port=lambda: 41234)

    assert placement.ranks == [0, 1, 2, 3] and placement.main
    assert [placement.env(rank) for rank in placement.ranks] == [
        {"RANK": str(rank), "WORLD_SIZE": "4", "LOCAL_RANK": str(rank % 2), "NODE_RANK": str(rank // 2),
         "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "41234", "NIMBUS_RANK": str(rank)}
        for rank in range(4)]


def test_a_single_process_run_gets_no_rank_variables_and_no_port():
    picked = []
    placement = plan({"script": "train.py"}, {}, pick_port=lambda: picked.append(1) or 1)
    assert placement.ranks == [0] and placement.env(0) == {} and not picked


def test_one_node_with_several_processes_is_distributed_too():
    placement = plan({"script": "t.py", "node_count": 1, "process_count_per_node": 3}, {}, pick_port=lambda: 5000)
    assert placement.ranks == [0, 1, 2]
    assert {placement.env(r)["NODE_RANK"] for r in placement.ranks} == {"0"}
    assert [placement.env(r)["LOCAL_RANK"] for r in placement.ranks] == ["0", "1", "2"]


def test_the_free_port_is_one_nothing_listens_on():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # would raise if taken


def test_a_batch_child_node_starts_its_own_ranks_and_finds_the_main_node():
    env = {"AWS_BATCH_JOB_NODE_INDEX": "1", "AWS_BATCH_JOB_MAIN_NODE_INDEX": "0", "AWS_BATCH_JOB_NUM_NODES": "2",
           "AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS": "10.0.3.7"}
    placement = plan(TWO_BY_TWO, env, pick_port=_no_port)

    assert placement.ranks == [2, 3] and not placement.main
    assert placement.env(3) == {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "NODE_RANK": "1",
                                "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "10.0.3.7",
                                "MASTER_PORT": str(DEFAULT_MASTER_PORT), "NIMBUS_RANK": "3"}


def test_the_batch_main_node_holds_rank_zero_and_listens_itself():
    # Batch sets no main-node address on the main node itself
    env = {"AWS_BATCH_JOB_NODE_INDEX": "0", "AWS_BATCH_JOB_MAIN_NODE_INDEX": "0", "AWS_BATCH_JOB_NUM_NODES": "2",
           "NIMBUS_MASTER_PORT": "23456"}
    placement = plan(TWO_BY_TWO, env, pick_port=_no_port)

    assert placement.ranks == [0, 1] and placement.main
    assert placement.env(1)["MASTER_ADDR"] == "127.0.0.1" and placement.env(1)["MASTER_PORT"] == "23456"


def test_node_ranks_count_from_the_main_node_whatever_its_index():
    env = {"AWS_BATCH_JOB_NODE_INDEX": "0", "AWS_BATCH_JOB_MAIN_NODE_INDEX": "1", "AWS_BATCH_JOB_NUM_NODES": "2",
           "AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS": "10.0.0.9"}
    assert plan(TWO_BY_TWO, env, pick_port=_no_port).ranks == [2, 3]


@pytest.mark.parametrize("env, words", [
    ({"AWS_BATCH_JOB_NODE_INDEX": "1", "AWS_BATCH_JOB_NUM_NODES": "3"}, "3"),
    ({"AWS_BATCH_JOB_NODE_INDEX": "1", "AWS_BATCH_JOB_NUM_NODES": "2"}, "AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4"),
    ({"AWS_BATCH_JOB_NODE_INDEX": "x"}, "AWS_BATCH_JOB_NODE_INDEX"),
    ({"AWS_BATCH_JOB_NODE_INDEX": "5", "AWS_BATCH_JOB_NUM_NODES": "2"}, "outside"),
])
def test_batch_variables_that_do_not_fit_the_run_are_refused_clearly(env, words):
    with pytest.raises(PlacementError) as refused:
        plan(TWO_BY_TWO, env, pick_port=_no_port)
    assert words in str(refused.value)


@pytest.mark.parametrize("count", [0, -1, "2", True, 1.5])
def test_counts_that_are_not_whole_numbers_are_refused(count):
    with pytest.raises(PlacementError, match="node_count"):
        plan({"script": "t.py", "node_count": count}, {})


def test_rank_zero_keeps_stdout_and_stderr_and_others_get_one_stream_each():
    assert [stream_of(0, "stdout"), stream_of(0, "stderr")] == ["stdout", "stderr"]
    assert [stream_of(2, "stdout"), stream_of(2, "stderr")] == ["rank-2", "rank-2"]


@pytest.mark.parametrize("value, rank", [(None, None), ("0", 0), ("3", 3), ("", None), ("-1", None), ("x", None),
                                         ("²", None)])
def test_the_sdk_reads_its_rank_from_nimbus_rank(monkeypatch, value, rank):
    if value is None:
        monkeypatch.delenv("NIMBUS_RANK", raising=False)
    else:
        monkeypatch.setenv("NIMBUS_RANK", value)
    assert process_rank() == rank


def _no_port() -> int:
    raise AssertionError("Batch nodes must agree on a port: none is picked at random")
