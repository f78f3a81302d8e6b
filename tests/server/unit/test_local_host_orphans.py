"""Scoring hosts a killed platform left running, recorded or not, are ended when the next one starts."""
from __future__ import annotations

import subprocess
import sys
import time

import psutil

from chalicelib.hosting.local_hosts import LocalHosts
from chalicelib.store.local_blobs import LocalBlobs
from chalicelib.store.sqlite_table import SqliteTable

# Stands in for a host the killed platform was still starting (no ready.json, no HOSTS record yet);
# it ignores SIGTERM, as a host stuck in its entry script's init() would not answer it.
STUCK_HOST = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(120)\n"


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_an_unrecorded_host_that_ignores_sigterm_is_ended_at_start(tmp_path):
    home = tmp_path / "home"
    folder = home / "scoring" / "ws" / "calc" / "blue" / "r1"
    folder.mkdir(parents=True)
    # The command line names the scoring host module, as a real host's (or its zygote's) does.
    orphan = subprocess.Popen([sys.executable, "-c", STUCK_HOST, "chalicelib.scoring.host"], cwd=folder,
                              start_new_session=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], cwd=folder)
    try:
        time.sleep(0.3)  # the SIGTERM handler is in place
        hosts = LocalHosts(home, LocalBlobs(home / "blobs", "http://127.0.0.1:9", home / "signing.key"),
                           SqliteTable(home / "nimbus.db"))
        hosts.start()
        try:
            deadline = time.monotonic() + 15
            while not gone(orphan.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert gone(orphan.pid), "the orphaned host still runs"
            assert not gone(bystander.pid)  # not a scoring host: left alone
        finally:
            hosts.stop()
    finally:
        for process in (orphan, bystander):
            process.kill()
            process.wait()
