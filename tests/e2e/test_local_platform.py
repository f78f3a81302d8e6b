"""The local platform as a user runs it: a real process, real HTTP, restarts and kill -9."""
from __future__ import annotations

import os
import signal
import stat
from concurrent.futures import ThreadPoolExecutor

import requests

def test_first_start_creates_admin_credentials_and_default_workspace(platform):
    mode = stat.S_IMODE(os.stat(platform.home / "credentials").st_mode)
    assert mode == 0o600
    assert platform.credentials()["url"] == platform.url
    session = platform.session()
    assert session.get(f"{platform.url}/v1/whoami").json()["is_admin"] is True
    assert session.get(f"{platform.url}/v1/workspaces").json()["workspaces"] == [{"name": "default", "role": "owner"}]
    assert requests.get(f"{platform.url}/v1/workspaces").status_code == 401


def test_acknowledged_writes_survive_kill_9_and_restart(platform):
    session, base = platform.session(), f"{platform.url}/v1/workspaces/default"
    run = session.post(f"{base}/runs", json={"experiment": "durable", "status": "Running"}).json()
    logged = session.post(f"{base}/runs/{run['id']}/metrics",
                          json={"metrics": [{"name": "loss", "values": [0.5, 0.25], "steps": [0, 1]}]})
    assert logged.status_code == 200
    token = platform.credentials()["token"]

    platform.stop(signal.SIGKILL)
    platform.start()

    assert platform.credentials()["token"] == token  # the admin keeps its token across starts
    session = platform.session()
    history = session.get(f"{base}/runs/{run['id']}/metric-history", params={"name": "loss"}).json()
    assert history["values"] == [0.5, 0.25]
    assert session.get(f"{base}/experiments/durable").json()["run_count"] == 1


def test_concurrent_clients_are_all_served(platform):
    base = f"{platform.url}/v1/workspaces/default"
    run = platform.session().post(f"{base}/runs", json={"experiment": "busy", "status": "Running"}).json()

    def log(worker: int) -> int:
        session = platform.session()
        for batch in range(5):
            values = [float(worker * 100 + batch * 10 + i) for i in range(10)]
            response = session.post(f"{base}/runs/{run['id']}/metrics", json={"metrics": [{"name": f"w{worker}", "values": values}]})
            assert response.status_code == 200, response.text
        return worker

    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(log, range(8))) == list(range(8))
    session = platform.session()
    for worker in range(8):
        history = session.get(f"{base}/runs/{run['id']}/metric-history", params={"name": f"w{worker}"}).json()
        assert len(history["values"]) == 50


def test_presigned_urls_move_bytes_and_expire_signature_checked(platform):
    session, base = platform.session(), f"{platform.url}/v1/workspaces/default"
    run = session.post(f"{base}/runs", json={"experiment": "files", "status": "Running"}).json()
    upload = session.post(f"{base}/runs/{run['id']}/outputs/uploads", json={"paths": ["model/weights.bin"]}).json()
    url = upload["uploads"][0]["url"]
    payload = os.urandom(3 * 1024 * 1024 + 7)
    assert requests.put(url, data=payload).status_code == 200
    assert requests.put(url.replace("signature=", "signature=0"), data=b"x").status_code == 403
    listing = session.get(f"{base}/runs/{run['id']}/outputs").json()["files"]
    assert [(f["path"], f["size"]) for f in listing] == [("model/weights.bin", len(payload))]
    download = session.get(f"{base}/runs/{run['id']}/outputs/download", params={"path": "model/weights.bin"}).json()
    assert requests.get(download["url"]).content == payload
    assert requests.put(download["url"], data=b"x").status_code == 403  # a download URL cannot upload
