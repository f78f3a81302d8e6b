"""A prewarmed interpreter that forks scoring hosts, so a host's cold start skips the imports it shares.

Importing a framework (scikit-learn, scipy, numpy…) is most of a scoring host's start. The zygote has
imported the host's own code and, as hosts report what their entry scripts imported, those modules
too; a host forked from it starts with all of them in memory.

Protocol, one JSON object per line on stdin, one answer per line on stdout:
    {"spawn": DIR, "port": N}    -> {"pid": P}   the child runs `chalicelib.scoring.host` on DIR; when
                                                 it ends, DIR/exit.json {"pid", "code"} tells how
    {"preload": [module, …]}     -> {"preloaded": n, "failed": m}
End of input ends the zygote; hosts it forked keep running (each is its own session).
"""
from __future__ import annotations

import importlib
import json
import os
import signal
import sys
from pathlib import Path

from chalicelib.scoring import host as host_module

_children: dict[int, Path] = {}


def _reap(*_) -> None:
    """Record how each finished host ended, for the supervisor that cannot wait() for it."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        folder = _children.pop(pid, None)
        if folder is not None:
            host_module.write_atomic(folder / "exit.json", {"pid": pid, "code": os.waitstatus_to_exitcode(status)})


def _spawn(folder: Path, port: int) -> int:
    (folder / "exit.json").unlink(missing_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        _children[pid] = folder
        return pid
    try:  # the child: becomes the host, and never returns to the zygote's loop
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        log = os.open(folder / "host.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        host_module.main(["--dir", str(folder), "--port", str(port)])  # exits the process
    finally:
        os._exit(1)


def _preload(modules: list[str]) -> dict:
    loaded = failed = 0
    for name in modules:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
            loaded += 1
        except Exception:  # noqa: BLE001 - a module that cannot be imported on its own is simply not preloaded
            failed += 1
    return {"preloaded": loaded, "failed": failed}


def main() -> None:
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor ends the zygote by closing its input
    for line in sys.stdin:
        request = json.loads(line)
        if "spawn" in request:
            answer = {"pid": _spawn(Path(request["spawn"]), int(request.get("port", 0)))}
        else:
            answer = _preload([str(name) for name in request.get("preload", [])])
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
