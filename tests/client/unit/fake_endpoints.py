"""An in-memory stand-in for the deployments and endpoints routes, patched into ApiClient's HTTP exchange.

It follows docs/models-and-endpoints.md: a first deployment gets all the traffic, later ones weight 0;
scoring takes an endpoint key, never a user token. An entry script named broken.py deploys as Failed;
slow.py answers 202 Creating (Updating) and is Succeeded after `looks` reads of it, late_broken.py the
same but Failed; scoring the body `boom` answers 500 like a run() that raised.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from nimbus.client import ApiClient

USER_TOKEN = "nmb_user"


class FakeEndpoints:
    def __init__(self):
        self.calls: list[tuple[str, str, dict, object, dict]] = []  # method, path, query, body, headers
        self.endpoints: dict[str, dict] = {}
        self.manifests: list[list[dict]] = []
        self.uploaded: list[str] = []
        self.key_serial = 0
        self.looks = 2  # reads a slow deployment takes to roll out

    # --- plumbing --------------------------------------------------------------------------------------
    def install(self, monkeypatch) -> "FakeEndpoints":
        monkeypatch.setattr(ApiClient, "_exchange", lambda client, *args: self.exchange(*args))
        monkeypatch.setattr(ApiClient, "upload", lambda client, url, source, progress=None: self.upload(url, source))
        return self

    def upload(self, url: str, source) -> int:
        self.uploaded.append(url)
        return Path(source).stat().st_size

    def exchange(self, method: str, url: str, body: bytes | None, headers: dict):
        parts = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        raw = body
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        self.calls.append((method, parts.path, query, raw, dict(headers)))
        status, reply = self.route(method, parts.path, query, data, raw, headers)
        return status, json.dumps(reply).encode() if reply is not None else b"", "OK"

    def requests(self, method: str, suffix: str) -> list[tuple]:
        return [call for call in self.calls if call[0] == method and call[1].endswith(suffix)]

    # --- routes ----------------------------------------------------------------------------------------
    def route(self, method, path, query, data, raw, headers):
        match = re.fullmatch(r"/v1/workspaces/[^/]+/(.*)", path)
        rest = match[1] if match else ""
        if rest == "snapshots/uploads":
            return 200, {"uploads": [{"digest": f["digest"], "url": f"https://blob/{f['digest']}"}
                                     for f in data["files"]]}
        if rest == "snapshots":
            self.manifests.append(data["files"])
            return 201, {"id": "s" * 64, "file_count": len(data["files"])}
        if rest == "endpoints" and method == "GET":
            return 200, {"endpoints": [self.view(name) for name in sorted(self.endpoints)]}
        match = re.fullmatch(r"endpoints/([^/]+)(?:/(.*))?", rest)
        if not match:
            return 404, {"code": "NotFound", "message": f"no route {method} {path}"}
        name, tail = match[1], match[2] or ""
        if method == "PUT" and tail.startswith("deployments/"):
            return self.put_deployment(name, tail.split("/")[1], data)
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            return 404, {"code": "NotFound", "message": f"endpoint {name!r} does not exist", "field": "endpoint"}
        return self.endpoint_route(method, endpoint, tail, query, data, raw, headers)

    def endpoint_route(self, method, endpoint, tail, query, data, raw, headers):
        name = endpoint["name"]
        if (method, tail) == ("GET", ""):
            return 200, self.view(name)
        if (method, tail) == ("DELETE", ""):
            removed = sorted(self.endpoints.pop(name)["deployments"])
            return 200, {"endpoint": name, "deleted": True, "deployments": removed}
        if (method, tail) == ("PUT", "traffic"):
            endpoint["traffic"] = data["traffic"]
            return 200, self.view(name)
        if (method, tail) == ("GET", "keys"):
            return 200, dict(endpoint["keys"])
        if (method, tail) == ("POST", "keys/regenerate"):
            endpoint["keys"][f"{data['key']}_key"] = self.new_key()
            return 200, dict(endpoint["keys"])
        if (method, tail) == ("GET", "telemetry"):
            minutes = int(query.get("minutes", 60))
            stats = {"requests": 3, "errors": 1, "p50_ms": 4.0, "p95_ms": 9.5}
            return 200, {"window_minutes": minutes, **stats,
                         "deployments": {d: dict(stats) for d in endpoint["deployments"]}}
        if (method, tail) == ("POST", "score"):
            return self.score(endpoint, raw, headers)
        match = re.fullmatch(r"deployments/([^/]+)(/logs)?", tail)
        deployment = endpoint["deployments"].get(match[1]) if match else None
        if deployment is None:
            return 404, {"code": "NotFound", "message": f"no such deployment: {tail}", "field": "deployment"}
        if method == "GET" and match[2]:
            return 200, {"logs": f"{deployment['name']}: last {query.get('tail')} lines\n"}
        if method == "GET":
            return 200, self.look(deployment)
        if method == "DELETE":
            del endpoint["deployments"][deployment["name"]]
            endpoint["traffic"].pop(deployment["name"], None)
            return 200, {"endpoint": name, "deployment": deployment["name"], "deleted": True}
        return 404, {"code": "NotFound", "message": "no route"}

    def put_deployment(self, endpoint_name, name, data):
        endpoint = self.endpoints.setdefault(endpoint_name, {
            "name": endpoint_name, "traffic": {}, "deployments": {}, "created": "2024-01-01T00:00:00Z",
            "keys": {"primary_key": self.new_key(), "secondary_key": self.new_key()}})
        endpoint["traffic"].setdefault(name, 0 if endpoint["traffic"] else 100)
        script, previous = data["entry_script"], endpoint["deployments"].get(name, {})
        view = {"name": name, "endpoint": endpoint_name, **data, "revision": previous.get("revision", 0) + 1}
        if script.endswith(("slow.py", "late_broken.py")):
            view.update(state="Updating" if previous else "Creating", step="publish", error=None, host={},
                        looks_left=self.looks, ends_failed=script.endswith("late_broken.py"))
            endpoint["deployments"][name] = view
            return 202, self.public(view)
        endpoint["deployments"][name] = self.settle(view, failed=script.endswith("broken.py"))
        return 200, self.public(view)

    def settle(self, view: dict, failed: bool) -> dict:
        for name in ("step", "looks_left", "ends_failed"):
            view.pop(name, None)
        view.update(state="Failed" if failed else "Succeeded",
                    error="ImportError: No module named 'missing'" if failed else None,
                    host={} if failed else {"host_url": "http://127.0.0.1:40001", "port": 40001})
        return view

    def look(self, view: dict) -> dict:
        """A read takes a slow deployment's rollout a step further, as the service's reads do."""
        if view.get("looks_left"):
            view["looks_left"] -= 1
            if not view["looks_left"]:
                self.settle(view, failed=view["ends_failed"])
        return self.public(view)

    @staticmethod
    def public(view: dict) -> dict:
        return {k: v for k, v in view.items() if k not in ("looks_left", "ends_failed")}

    def score(self, endpoint, raw, headers):
        auth = headers.get("Authorization", "")
        if auth.removeprefix("Bearer ") not in endpoint["keys"].values():
            return 401, {"code": "Unauthorized", "message": "a valid endpoint key is required"}
        text = (raw or b"").decode("utf-8")
        if text == "boom":
            return 500, {"code": "ScoringError", "message": "ValueError: boom"}
        return 200, {"received": text}

    def view(self, name: str) -> dict:
        endpoint = self.endpoints[name]
        return {"name": name, "workspace": "team",
                "scoring_uri": f"http://nimbus.test/v1/workspaces/team/endpoints/{name}/score",
                "traffic": dict(endpoint["traffic"]), "created": endpoint["created"], "created_by": "alice",
                "deployments": [self.look(endpoint["deployments"][d]) for d in sorted(endpoint["deployments"])]}

    def new_key(self) -> str:
        self.key_serial += 1
        return f"key-{self.key_serial}"
