"""Compare a revision with the working tree: the same benchmarks, interleaved in one run, as ratios.

    .venv/bin/python bench/compare_revisions.py REV [--benchmarks ingest,runs,score] [--rounds N] [--quick]

Checks REV out into a temporary detached worktree (removed at the end), then for each benchmark runs
it N times on each tree, alternately (REV, current, REV, current, ...), so whatever else loads the
machine weighs on both sides alike. Each run is a subprocess of this interpreter with cwd and
PYTHONPATH set to its tree, so each tree's own bench script, SDK and platform are the ones measured,
whatever their module layout. The last JSON line of every run is kept; the medians of each numeric
figure over the N rounds are printed for both trees with their ratio (current / REV), and the whole
comparison is the last line of stdout, as one JSON object.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _platform import last_json_line, log  # noqa: E402

HERE = Path(__file__).resolve().parent.parent
BENCHMARKS = ("ingest", "runs", "score", "submit", "snapshot", "prepare", "batch_submit")
DEFAULT = "ingest,runs,score"
# Shorter workloads for --quick. runs keeps 1,000 runs so the search still fills its page of 100.
QUICK = {"runs": ["--runs", "1000"], "score": ["--starts", "3", "--seconds", "5", "--requests", "500"],
         "submit": ["--runs", "8"], "prepare": ["--runs", "4"], "batch_submit": ["--runs", "30", "--iterations", "2000"]}
# Figures that describe the machine, not the code: shown, never judged.
MACHINE = ("load_avg_1m_at_start", "cpus")


# --- git ------------------------------------------------------------------------------------------
def git(*args: str, cwd: Path = HERE) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def describe_current(repo: Path) -> dict:
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", cwd=repo))
    return {"path": str(repo), "commit": git("rev-parse", "HEAD", cwd=repo), "uncommitted_changes": dirty}


@contextlib.contextmanager
def worktree(repo: Path, commit: str) -> Iterator[Path]:
    """A detached checkout of `commit` in a temporary folder; removed (and unregistered) afterwards."""
    parent = Path(tempfile.mkdtemp(prefix="nimbus-compare-"))
    path = parent / f"rev-{commit[:12]}"
    git("worktree", "add", "--detach", str(path), commit, cwd=repo)
    try:
        yield path
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            git("worktree", "remove", "--force", str(path), cwd=repo)
        shutil.rmtree(parent, ignore_errors=True)
        with contextlib.suppress(subprocess.CalledProcessError):
            git("worktree", "prune", cwd=repo)


# --- running one benchmark once -------------------------------------------------------------------
def tree_env(tree: Path) -> dict:
    # PYTHONPATH is searched before the editable install's finder, so the tree's packages win.
    return {**os.environ, "PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1"}


def warm_up(tree: Path) -> None:
    """Byte-compile the tree, so a fresh worktree's first round does not pay for it alone."""
    folders = [str(tree / name) for name in ("chalicelib", "nimbus", "bench") if (tree / name).is_dir()]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *folders], cwd=tree, env=tree_env(tree),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def imported_from(tree: Path) -> str:
    """Where the tree's interpreter finds the packages: proof that PYTHONPATH took effect."""
    probe = "import chalicelib, nimbus; print(chalicelib.__file__); print(nimbus.__file__)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=tree, env=tree_env(tree), capture_output=True, text=True)
    if done.returncode != 0:
        return f"import failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
    paths = done.stdout.split()
    outside = [p for p in paths if not Path(p).resolve().is_relative_to(tree.resolve())]
    return f"outside the tree: {outside}" if outside else "ok"


def run_once(tree: Path, script: str, args: list[str], timeout: float) -> tuple[dict | None, str | None, float]:
    """One benchmark run; (its JSON, None, seconds) or (None, the error, seconds)."""
    command = [sys.executable, str(tree / "bench" / script), *args]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=tree, env=tree_env(tree), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        interrupt(process)
        return None, f"no result after {timeout:.0f} s: interrupted", time.perf_counter() - started
    except KeyboardInterrupt:
        interrupt(process)
        raise
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        return None, f"exit {process.returncode}:\n{tail(err)}", seconds
    try:
        return last_json_line(out), None, seconds
    except ValueError as exc:
        return None, f"{exc}; stderr:\n{tail(err)}", seconds


def interrupt(process: subprocess.Popen) -> None:
    """SIGINT first: the benchmark's finally blocks then stop the servers it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# --- one benchmark, both trees, N rounds ------------------------------------------------------------
def options_for(name: str, trees: dict[str, Path], quick: bool, extra: list[str]) -> tuple[list[str], str]:
    """The benchmark's arguments, the same on both trees; quick ones only if both scripts take them."""
    wanted = QUICK.get(name, []) if quick else []
    flags = [part for part in wanted if part.startswith("--")]
    sources = [(tree / "bench" / f"{name}.py").read_text() for tree in trees.values()]
    if all(f'"{flag}"' in source for flag in flags for source in sources):
        return wanted + extra, ""
    return extra, f"--quick options {flags} not taken by both trees' {name}.py: running the full workload"


def run_benchmark(name: str, trees: dict[str, Path], args: list[str], rounds: int, timeout: float) -> dict:
    record: dict = {"args": args, "runs": {side: [] for side in trees}, "seconds": {side: [] for side in trees}}
    for number in range(1, rounds + 1):
        for side, tree in trees.items():  # REV then current, every round
            log(f"{name}: round {number}/{rounds} on {side} ({shlex.join(args) or 'default options'})")
            result, error, seconds = run_once(tree, f"{name}.py", args, timeout)
            record["seconds"][side].append(round(seconds, 1))
            if error:
                log(f"{name}: FAILED on {side}: {error}")
                record["error"] = {"tree": side, "round": number, "message": error}
                return record
            record["runs"][side].append(result)
    return record


# --- figures -----------------------------------------------------------------------------------------
def numeric(result: dict, prefix: str = "") -> dict[str, float]:
    """Every number in a result, nested keys joined with dots (booleans are not figures)."""
    found: dict[str, float] = {}
    for key, value in result.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            found.update(numeric(value, f"{path}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            found[path] = float(value)
    return found


def direction(path: str) -> str:
    """Which way is better, from the figure's name: rates up; times, sizes and counts down."""
    name = path.rsplit(".", 1)[-1]
    if name in MACHINE:
        return ""
    if "speedup" in name or name.endswith(("_vs_mlflow", "per_s")) or name == "rps":
        return "higher"
    return "lower"


def verdict(better: str, change: float | None, values: list[list[float]], tolerance: float) -> str:
    """A change counts only beyond `tolerance` and when no round of one tree reaches the other's range:
    with a few rounds on a busy machine, overlapping ranges are noise."""
    if not better or change is None or abs(change - 1) <= tolerance:
        return ""
    low, high = sorted(values, key=statistics.median)
    if min(len(low), len(high)) < 2:
        return "(1 round)"  # no spread to judge the change against
    if max(low) >= min(high):
        return "(noise)"
    return "better" if (change > 1) == (better == "higher") else "WORSE"


def spread(values: list[float]) -> float:
    """(max - min) / median, as a gauge of the noise on one side."""
    middle = statistics.median(values)
    return (max(values) - min(values)) / abs(middle) if middle else 0.0


def unshared(per_side: dict[str, list[dict]]) -> dict[str, list[str]]:
    """Figures some run lacks (a tree that reports more or fewer figures): listed, not compared."""
    runs = [run for side_runs in per_side.values() for run in side_runs]
    everywhere = set.intersection(*(set(run) for run in runs))
    return {side: sorted({p for run in side_runs for p in run} - everywhere) for side, side_runs in per_side.items()}


def summarise(record: dict, tolerance: float) -> dict:
    """Per figure: both medians, the ratio, its direction and verdict, and every round's value."""
    sides = list(record["runs"])
    per_side = {side: [numeric(run) for run in record["runs"][side]] for side in sides}
    only = unshared(per_side)
    figures, constant = {}, {}
    for path in per_side[sides[0]][0]:
        if path in only[sides[0]]:
            continue
        values = {side: [run[path] for run in per_side[side]] for side in sides}
        if len({v for side in sides for v in values[side]}) == 1:
            constant[path] = values[sides[0]][0]  # an input or a count both trees agree on
            continue
        rev, cur = (statistics.median(values[side]) for side in sides)
        change = round(cur / rev, 3) if rev else None
        better = direction(path)
        figures[path] = {"rev": rev, "current": cur, "ratio": change, "better": better,
                         "verdict": verdict(better, change, list(values.values()), tolerance),
                         "spread": round(max(spread(values[side]) for side in sides), 3),
                         "rev_rounds": values[sides[0]], "current_rounds": values[sides[1]]}
    return {"figures": figures, "constant": constant, "only_in": {s: p for s, p in only.items() if p}}


# --- output ------------------------------------------------------------------------------------------
def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"


def print_table(name: str, summary: dict, rev_label: str) -> None:
    print(f"\n== {name}  {shlex.join(summary['args']) or '(default options)'}")
    if summary.get("note"):
        print(f"   {summary['note']}")
    if summary.get("error"):
        error = summary["error"]
        print(f"   FAILED on {error['tree']} (round {error['round']}):\n{error['message']}")
        if "figures" not in summary:
            return
        print(f"   the {summary['rounds_completed']} round(s) both trees completed before that:")
    width = max([len(p) for p in summary["figures"]] + [6])
    print(f"   {'figure':<{width}}  {'better':<6}  {rev_label:>12}  {'current':>12}  {'cur/rev':>8}  "
          f"{'spread':>6}  verdict")
    for path, row in summary["figures"].items():
        print(f"   {path:<{width}}  {row['better'] or '-':<6}  {fmt(row['rev']):>12}  {fmt(row['current']):>12}  "
              f"{fmt(row['ratio']):>8}  {row['spread'] * 100:>5.0f}%  {row['verdict']}")
    if summary["constant"]:
        same = ", ".join(f"{p}={fmt(v)}" for p, v in summary["constant"].items())
        print(f"   the same in every run of both trees: {same}")
    for side, paths in summary.get("only_in", {}).items():
        print(f"   not in every run of both trees, so not compared ({side}): {', '.join(paths)}")
    seconds = summary["seconds"]
    print(f"   wall time per run (s): {rev_label} {seconds['rev']}, current {seconds['current']}", flush=True)


def legend(tolerance: float, rounds: int) -> None:
    print(f"\nMedians of {rounds} interleaved round(s) per tree. cur/rev = current / REV: for a 'higher' figure"
          f" (a rate) above 1 is better, for a 'lower' one (a time, a size, a count) below 1 is better."
          f" verdict: a change beyond {tolerance:.0%} where the two trees' rounds do not overlap, else"
          f" (noise); spread is the larger (max - min) / median of the two sides.")


# --- main --------------------------------------------------------------------------------------------
def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="the revision to compare the working tree with (anything git rev-parse takes)")
    parser.add_argument("--benchmarks", default=DEFAULT, help=f"comma-separated, of {', '.join(BENCHMARKS)} "
                                                              f"(default {DEFAULT})")
    parser.add_argument("--rounds", type=int, default=3, help="runs per tree, interleaved (default 3)")
    parser.add_argument("--quick", action="store_true", help="shorter workloads: " + "; ".join(
        f"{name} {' '.join(args)}" for name, args in QUICK.items()))
    parser.add_argument("--args", action="append", default=[], metavar="NAME=ARGS",
                        help="extra arguments for one benchmark on both trees, e.g. runs='--runs 500'")
    parser.add_argument("--tolerance", type=float, default=0.10, help="change marked in the verdict (default 0.10)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one benchmark run may take")
    arguments = parser.parse_args(argv)
    arguments.benchmarks = [b.strip().removesuffix(".py") for b in arguments.benchmarks.split(",") if b.strip()]
    unknown = [b for b in arguments.benchmarks if b not in BENCHMARKS]
    if unknown or arguments.rounds < 1:
        parser.error(f"unknown benchmarks {unknown}" if unknown else "--rounds must be at least 1")
    if any("=" not in item for item in arguments.args):
        parser.error("--args takes NAME=ARGS, e.g. runs='--runs 500'")
    extra = dict(item.split("=", 1) for item in arguments.args)
    arguments.extra = {name.removesuffix(".py"): shlex.split(value) for name, value in extra.items()}
    return arguments


def compare(name: str, trees: dict[str, Path], arguments: argparse.Namespace) -> dict:
    missing = [side for side, tree in trees.items() if not (tree / "bench" / f"{name}.py").is_file()]
    if missing:
        message = f"bench/{name}.py does not exist in the {' and the '.join(missing)} tree: skipped"
        log(f"{name}: {message}")
        return {"args": [], "skipped": message}
    args, note = options_for(name, trees, arguments.quick, arguments.extra.get(name, []))
    record = run_benchmark(name, trees, args, arguments.rounds, arguments.timeout)
    summary = {"args": args, "note": note, "seconds": record["seconds"]}
    if "error" in record:
        # The rounds both trees finished are still a comparison, if a shorter one.
        summary["error"] = record["error"]
        paired = min(len(runs) for runs in record["runs"].values())
        if not paired:
            return summary
        record["runs"] = {side: runs[:paired] for side, runs in record["runs"].items()}
        summary["rounds_completed"] = paired
    return {**summary, **summarise(record, arguments.tolerance)}


def main() -> int:
    arguments = parse()
    began = time.perf_counter()
    repo = Path(git("rev-parse", "--show-toplevel"))
    try:
        commit = git("rev-parse", "--verify", "--quiet", f"{arguments.rev}^{{commit}}", cwd=repo)
    except subprocess.CalledProcessError:
        sys.exit(f"compare_revisions: {arguments.rev!r} names no commit in {repo}")
    result: dict = {"rev": {"name": arguments.rev, "commit": commit}, "current": describe_current(repo),
                    "rounds": arguments.rounds, "quick": arguments.quick, "benchmarks": {}}
    rev_label = f"rev {commit[:7]}"
    with worktree(repo, commit) as checkout:
        trees = {"rev": checkout, "current": repo}
        for side, tree in trees.items():
            warm_up(tree)
            result[side]["imports"] = imported_from(tree)
            log(f"{side} tree {tree}: packages import {result[side]['imports']}")
        for name in arguments.benchmarks:
            result["benchmarks"][name] = summary = compare(name, trees, arguments)
            if "skipped" in summary:
                print(f"\n== {name}: {summary['skipped']}")
            else:
                print_table(name, summary, rev_label)
    legend(arguments.tolerance, arguments.rounds)
    result["seconds"] = round(time.perf_counter() - began, 1)
    print(f"total {result['seconds']:.0f} s")
    print(json.dumps(result, separators=(", ", ": ")), flush=True)
    return 1 if any("error" in b for b in result["benchmarks"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
