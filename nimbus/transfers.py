"""What every file transfer of the SDK shares: a few transfers in flight at once, local paths that stay
inside their folder, and the files of a folder without following links out of it."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable

from nimbus.exceptions import InvalidError

PARALLEL_TRANSFERS = 4


def parallel(task: Callable[[Any], Any], jobs: Iterable[Any], name: str = "nimbus-transfer") -> list[Any]:
    """Runs transfers a few at a time, answers in the jobs' order; the first failure is raised once the
    others stop."""
    jobs = list(jobs)
    if len(jobs) <= 1:
        return [task(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=PARALLEL_TRANSFERS, thread_name_prefix=name) as pool:
        return list(pool.map(task, jobs))


def inside(directory: Path, relative: str) -> Path:
    """directory/relative, refusing any path that would land outside the directory."""
    target = (directory / relative).resolve()
    if not target.is_relative_to(directory.resolve()):
        raise InvalidError(f"path {relative!r} would be written outside {str(directory)!r}")
    return directory / relative


def folder_files(root: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """(relative POSIX path, the file to read) of every file under `root`, in path order, and the links
    left out. Links are never followed out of `root`: one to a file inside it reads that file; one to a
    file outside, to a folder or to nothing is left out."""
    real_root = root.resolve()
    found: list[tuple[str, Path]] = []
    left_out: list[str] = []
    for folder, folders, names in os.walk(root, followlinks=False):
        here = Path(folder)
        for entry in [*names, *(f for f in folders if (here / f).is_symlink())]:
            path = here / entry
            relative = path.relative_to(root).as_posix()
            if not path.is_symlink():
                if path.is_file():
                    found.append((relative, path))
                continue
            target = path.resolve()
            if target.is_relative_to(real_root) and target.is_file():
                found.append((relative, target))
            else:
                left_out.append(relative)
    return sorted(found), sorted(left_out)


def open_no_follow(path: Path):
    """Opens a file for reading without following a link in its last step: one swapped in since a walk
    found the file is refused."""
    return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb")
