"""Distributed runs: which ranks a runner starts, what each rank's environment holds, and the rank
processes supervised as one script.

A run asks for node_count × process_count_per_node processes of the same script. Locally one runner
starts them all, every "node" on this machine (rank r is on node r // process_count_per_node). On an
AWS Batch multi-node job each node's runner starts its own node's process_count_per_node ranks; the
node's place comes from the variables Batch sets (AWS_BATCH_JOB_NODE_INDEX, ...). See
docs/execution.md, "Distributed runs".
"""
from __future__ import annotations

import dataclasses
import queue
import resource
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from nimbus.runtime.runner_io import KILL_GRACE, Outcome, ScriptProcess
from nimbus.runtime.secret_mask import SecretMask

LOCAL_ADDR = "127.0.0.1"
DEFAULT_MASTER_PORT = 29500  # torch's own default: Batch nodes cannot agree on a port picked at random
FAILURE_GRACE = 3.0  # after one rank fails, how long the others may report their own errors and flush

Sender = Callable[[str], Callable[[str], None]]


class PlacementError(ValueError):
    """The run's node and process counts do not fit where the runner runs."""


@dataclass(frozen=True)
class Placement:
    node_count: int
    process_count_per_node: int
    nodes: tuple[int, ...]  # the node ranks whose processes this runner starts
    master_addr: str
    master_port: int

    @property
    def world_size(self) -> int:
        return self.node_count * self.process_count_per_node

    @property
    def ranks(self) -> list[int]:
        per_node = self.process_count_per_node
        return [node * per_node + local for node in self.nodes for local in range(per_node)]

    @property
    def main(self) -> bool:
        """This runner starts rank 0. On a Batch multi-node job only this node reports the run's lifecycle
        and uploads its ./outputs; a child node reports nothing but its own ranks' failure."""
        return 0 in self.nodes

    def env(self, rank: int) -> dict[str, str]:
        """The variables torch.distributed's env:// setup reads, plus NIMBUS_RANK; none for a single process."""
        if self.world_size == 1:
            return {}
        per_node = self.process_count_per_node
        values = {"RANK": rank, "WORLD_SIZE": self.world_size, "LOCAL_RANK": rank % per_node,
                  "NODE_RANK": rank // per_node, "LOCAL_WORLD_SIZE": per_node, "MASTER_ADDR": self.master_addr,
                  "MASTER_PORT": self.master_port, "NIMBUS_RANK": rank}
        return {name: str(value) for name, value in values.items()}


def free_port() -> int:
    """A port nothing listens on now (rank 0 binds it moments later; the kernel rarely hands it out again)."""
    with socket.socket() as sock:
        sock.bind((LOCAL_ADDR, 0))
        return sock.getsockname()[1]


def plan(config: Mapping[str, Any], env: Mapping[str, str], pick_port: Callable[[], int] = free_port) -> Placement:
    """Where the run's ranks go: all on this machine, or this Batch node's share of a multi-node job."""
    nodes, per_node = _count(config, "node_count"), _count(config, "process_count_per_node")
    if env.get("AWS_BATCH_JOB_NODE_INDEX") is not None:  # set on the nodes of a multi-node parallel job only
        return _batch_node(nodes, per_node, env)
    port = pick_port() if nodes * per_node > 1 else 0
    return Placement(nodes, per_node, tuple(range(nodes)), LOCAL_ADDR, port)


def main_node(env: Mapping[str, str]) -> bool:
    """Whether this runner holds rank 0, known before the run's config is read: every runner but the one
    on a child node of a Batch multi-node job. Placement.main says the same once the run is planned; an
    unreadable node index counts as the main node's, so the planning error is reported in full."""
    if env.get("AWS_BATCH_JOB_NODE_INDEX") is None:
        return True
    try:
        return _env_int(env, "AWS_BATCH_JOB_NODE_INDEX") == _env_int(env, "AWS_BATCH_JOB_MAIN_NODE_INDEX", 0)
    except PlacementError:
        return True


def _batch_node(nodes: int, per_node: int, env: Mapping[str, str]) -> Placement:
    index = _env_int(env, "AWS_BATCH_JOB_NODE_INDEX")
    main = _env_int(env, "AWS_BATCH_JOB_MAIN_NODE_INDEX", 0)
    count = _env_int(env, "AWS_BATCH_JOB_NUM_NODES", nodes)
    if count != nodes:
        raise PlacementError(f"the run asks for {nodes} nodes but the Batch job has {count}")
    if not 0 <= index < count or not 0 <= main < count:
        raise PlacementError(f"Batch node index {index} (main node {main}) is outside the job's {count} nodes")
    node_rank = (index - main) % count  # the main node holds rank 0, whatever its index
    if node_rank == 0:
        # Batch gives the main node no address of its own; rank 0's store listens on every interface.
        address = LOCAL_ADDR
    else:
        address = env.get("AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS", "")
        if not address:
            raise PlacementError("AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS is not set on a child node")
    port = _env_int(env, "NIMBUS_MASTER_PORT", DEFAULT_MASTER_PORT)
    return Placement(nodes, per_node, (node_rank,), address, port)


def _count(config: Mapping[str, Any], name: str) -> int:
    value = config.get(name, 1)
    value = 1 if value is None else value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PlacementError(f"run_config.{name} must be a whole number of at least 1, not {value!r}")
    return value


def _env_int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    text = env.get(name)
    if text is None and default is not None:
        return default
    try:
        return int(text)
    except (TypeError, ValueError):
        raise PlacementError(f"{name} must be a whole number, not {text!r}") from None


def stream_of(rank: int, stream: str) -> str:
    """Rank 0 keeps the usual stdout and stderr; every other rank has one stream for both."""
    return stream if rank == 0 else f"rank-{rank}"


def start_script(argv: list[str], cwd: Path, env: dict[str, str], sender: Sender, placement: Placement,
                 *, echo: bool = True, popen_options: dict | None = None,
                 mask: SecretMask | None = None) -> "ScriptProcess | RankGroup":
    """What the runner supervises: the script itself for one process, else the group of its ranks (every
    rank confined alike by `popen_options`: one run, one uid)."""
    if placement.world_size == 1:
        return ScriptProcess(argv, cwd, env, sender, echo=echo, popen_options=popen_options, mask=mask)
    return RankGroup(argv, cwd, env, sender, placement, echo=echo, popen_options=popen_options, mask=mask)


class RankGroup:
    """A script's ranks as one: started together, signalled together, and ended together when one fails.

    It answers like a ScriptProcess (start, signal, end, wait, kill), so the runner treats a distributed
    script as any other. Each rank is a ScriptProcess in its own process group, its output pumped to
    its own log stream.
    """

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], sender: Sender, placement: Placement,
                 *, echo: bool = True, failure_grace: float | None = None, kill_grace: float = KILL_GRACE,
                 popen_options: dict | None = None, mask: SecretMask | None = None):
        self._argv, self._cwd, self._env, self._sender, self._echo = argv, cwd, env, sender, echo
        self._popen_options, self._mask = popen_options, mask
        self.placement = placement
        self._failure_grace = FAILURE_GRACE if failure_grace is None else failure_grace
        self._kill_grace = kill_grace
        self._ranks: dict[int, ScriptProcess] = {}
        self._ended: dict[int, Outcome] = {}
        self._lock = threading.Lock()
        self._done: queue.Queue[tuple[int, Outcome]] = queue.Queue()

    def start(self) -> None:
        """Raises OSError (or SubprocessError) when a rank cannot be started (the ones already started are killed)."""
        self._before = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._started = time.monotonic()
        for rank in self.placement.ranks:
            process = ScriptProcess(self._argv, self._cwd, {**self._env, **self.placement.env(rank)},
                                    self._rank_sender(rank), echo=self._echo, popen_options=self._popen_options,
                                    mask=self._mask)
            try:
                process.start()
            except (OSError, subprocess.SubprocessError):
                self.kill()
                raise
            self._ranks[rank] = process
        for rank, process in self._ranks.items():
            threading.Thread(target=self._wait_rank, args=(rank, process), name=f"nimbus-rank-{rank}",
                             daemon=True).start()

    def signal(self, signum: int) -> None:
        """Every rank still running (an ended rank's group id may belong to someone else by now)."""
        with self._lock:
            running = [p for rank, p in self._ranks.items() if rank not in self._ended]
        for process in running:
            process.signal(signum)

    def wait(self) -> Outcome:
        failed: Outcome | None = None
        stop_at = kill_at = None
        waiting = len(self._ranks)
        while waiting:
            try:
                rank, outcome = self._done.get(timeout=0.25)
            except queue.Empty:
                pass
            else:
                waiting -= 1
                if outcome.run_ended:  # the service closed the run: every rank's work is moot
                    stop_at = time.monotonic()
                elif outcome.exit_code != 0 and failed is None:
                    failed = dataclasses.replace(outcome, rank=rank)
                    stop_at = time.monotonic() + self._failure_grace
            now = time.monotonic()
            if stop_at is not None and kill_at is None and now >= stop_at:
                self.signal(signal.SIGTERM)
                kill_at = now + self._kill_grace
            elif kill_at is not None and now >= kill_at:
                self.signal(signal.SIGKILL)
                kill_at = now + self._kill_grace
        return self._outcome(failed)

    def end(self) -> None:
        """The run is no longer this runner's: every rank stops as ScriptProcess.end says."""
        for process in list(self._ranks.values()):
            process.end()

    def kill(self) -> None:
        for process in list(self._ranks.values()):
            process.kill()

    def _wait_rank(self, rank: int, process: ScriptProcess) -> None:
        try:
            outcome = process.wait()
        except BaseException as err:  # noqa: BLE001 - the group must hear of every rank, or it waits forever
            outcome = Outcome(1, 0.0, 0.0, 0.0, f"supervising rank {rank} failed: {err}")
        with self._lock:
            self._ended[rank] = outcome
        self._done.put((rank, outcome))

    def _outcome(self, failed: Outcome | None) -> Outcome:
        duration = time.monotonic() - self._started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        # CPU: every rank has been waited for, so the children's usage counts each of them once.
        cpu = (after.ru_utime - self._before.ru_utime) + (after.ru_stime - self._before.ru_stime)
        # Memory: the ranks run side by side, so their peaks add up (an upper bound of the peak together).
        peak = round(sum(o.peak_memory_mb for o in self._ended.values()), 1)
        run_ended = any(o.run_ended for o in self._ended.values())
        if failed is None:
            return Outcome(0, round(duration, 3), peak, round(max(cpu, 0.0), 3), "", run_ended)
        return Outcome(failed.exit_code, round(duration, 3), peak, round(max(cpu, 0.0), 3), failed.stderr_tail,
                       run_ended, rank=failed.rank)

    def _rank_sender(self, rank: int) -> Callable[[str], Callable[[str], None]]:
        return lambda stream: self._sender(stream_of(rank, stream))
