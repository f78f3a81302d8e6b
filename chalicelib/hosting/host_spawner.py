"""Starting local scoring host processes: forked from a prewarmed zygote when possible, else fresh.

A fresh interpreter pays for every import of the entry script (scikit-learn alone takes seconds); a
host forked from the zygote (chalicelib/scoring/zygote.py) has them already. After each host starts,
the modules it imported are preloaded into the zygote, so the next start of any deployment that uses
them is fast. NIMBUS_SCORING_PREFORK=0 turns this off (e.g. for a library that does not survive fork).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HOST_COMMAND = ("-m", "chalicelib.scoring.host")
# In a deployment's folder when it scores in an environment: {"python": venv interpreter, "env": variables}.
# Such a host starts fresh with that interpreter: the zygote holds the platform's own packages.
INTERPRETER_FILE = "interpreter.json"
ZYGOTE_COMMAND = ("-m", "chalicelib.scoring.zygote")


class ForkedHost:
    """A host forked by the zygote: the subprocess.Popen calls the supervisor uses, by pid."""

    def __init__(self, pid: int, folder: Path):
        self.pid = pid
        self.folder = folder
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        code = self._recorded_exit()
        if code is None and not _alive(self.pid):
            time.sleep(0.2)  # reaped a moment ago: the zygote is writing exit.json
            code = self._recorded_exit()
            code = -1 if code is None else code  # the zygote is gone too: the code is lost
        self.returncode = code
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"scoring host {self.pid}", timeout)
            time.sleep(0.02)
        return self.returncode

    def _recorded_exit(self) -> int | None:
        """The code the zygote recorded for this pid (an earlier host of the same folder may have left one)."""
        try:
            recorded = json.loads((self.folder / "exit.json").read_text())
            return int(recorded["code"]) if recorded.get("pid") == self.pid else None
        except (FileNotFoundError, ValueError, KeyError):
            return None


class HostSpawner:
    def __init__(self, env: dict[str, str], log_folder: Path, prefork: bool = True):
        self.env = env
        self.log_folder = log_folder
        self.prefork = prefork
        self.zygote: subprocess.Popen | None = None
        self.preloaded: set[str] = set()
        self.lock = threading.Lock()

    def spawn(self, folder: Path):
        """A running host process for `folder` (Popen or ForkedHost)."""
        python, env = sys.executable, self.env
        interpreter = folder / INTERPRETER_FILE
        if interpreter.exists():
            chosen = json.loads(interpreter.read_text())
            python, env = chosen["python"], {**self.env, **chosen["env"]}
        elif self.prefork:
            with self.lock:
                answer = self._ask({"spawn": str(folder), "port": 0})
            if answer is not None:
                return ForkedHost(int(answer["pid"]), folder)
        with open(folder / "host.log", "ab") as log:
            return subprocess.Popen([python, *HOST_COMMAND, "--dir", str(folder), "--port", "0"],
                                    cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def learn(self, folder: Path) -> None:
        """Preload, in the background, what a host that just started had to import (not an environment's:
        the zygote could only import the platform's versions of them)."""
        if not self.prefork or (folder / INTERPRETER_FILE).exists():
            return
        try:
            modules = json.loads((folder / "modules.json").read_text())["modules"]
        except (FileNotFoundError, ValueError, KeyError):
            return
        new = [m for m in modules if m not in self.preloaded]
        if new:
            self.preloaded.update(new)
            threading.Thread(target=self._preload, args=(new,), name="zygote-preload", daemon=True).start()

    def close(self) -> None:
        with self.lock:
            zygote, self.zygote = self.zygote, None
        if zygote is not None:
            zygote.stdin.close()  # its hosts keep running: the supervisor stops them itself
            try:
                zygote.wait(5)
            except subprocess.TimeoutExpired:
                zygote.kill()

    def _preload(self, modules: list[str]) -> None:
        with self.lock:
            self._ask({"preload": modules})

    def _ask(self, request: dict) -> dict | None:
        """One request to the zygote (started when needed); None when it cannot answer."""
        for _ in range(2):  # a zygote that died is replaced once
            if self.zygote is None or self.zygote.poll() is not None:
                self.zygote = self._start_zygote()
                self.preloaded.clear()
            try:
                self.zygote.stdin.write(json.dumps(request) + "\n")
                self.zygote.stdin.flush()
                line = self.zygote.stdout.readline()
                if line:
                    return json.loads(line)
            except (OSError, ValueError):
                pass
            self.zygote.kill()
        self.prefork = False  # twice broken: fresh interpreters from now on
        return None

    def _start_zygote(self) -> subprocess.Popen:
        self.log_folder.mkdir(parents=True, exist_ok=True)
        with open(self.log_folder / "zygote.log", "ab") as log:
            return subprocess.Popen([sys.executable, *ZYGOTE_COMMAND], env=self.env, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
