"""Workspaces, their members and the roles checked on every workspace route."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from chalicelib.errors import Conflict, NotFound
from chalicelib.domain import table_keys
from chalicelib.store.table import Query

WS = "/v1/workspaces"


def add_member(api, workspace: str, user: str, role: str, token: str = "default") -> dict:
    return api.ok("POST", f"{WS}/{workspace}/members", {"user": user, "role": role}, token=token, status=201)


def roles(api, workspace: str, token: str = "default") -> dict[str, str]:
    return {m["user"]: m["role"] for m in api.ok("GET", f"{WS}/{workspace}/members", token=token)["members"]}


def new_run(api, workspace: str, experiment: str = "exp", token: str = "default", **fields) -> dict:
    return api.ok("POST", f"{WS}/{workspace}/runs", {"experiment": experiment, **fields}, token=token, status=201)


# --- create, show, list -----------------------------------------------------------------------------
def test_create_and_show(api):
    created = api.ok("POST", WS, {"name": "vision", "description": "image models"}, status=201)
    assert created["name"] == "vision" and created["role"] == "owner" and created["created_by"] == "admin"
    shown = api.ok("GET", f"{WS}/vision")
    assert shown == created
    assert roles(api, "vision") == {"admin": "owner"}


def test_name_validation(api):
    for name in ["a", "A1", "UPPER", "-lead", "under_score", "dot.ted", "sp ace", "x" * 33, "x" * 65, "", "é1"]:
        status, body = api.call("POST", WS, {"name": name})
        assert status == 400, (name, body)
        assert body["field"] == "name"
    for name in ["ab", "0lead", "x" * 32, "with-dash-"]:
        api.ok("POST", WS, {"name": name}, status=201)
    assert sorted(w["name"] for w in api.ok("GET", WS)["workspaces"]) == sorted(["ab", "0lead", "x" * 32, "with-dash-"])


def test_duplicate_name_is_409(api, user_token):
    api.ok("POST", WS, {"name": "shared"})
    status, body = api.call("POST", WS, {"name": "shared"})
    assert status == 409 and body["field"] == "name"
    # also for another user, who learns nothing else about it
    status, body = api.call("POST", WS, {"name": "shared"}, token=user_token("bob"))
    assert status == 409
    assert roles(api, "shared") == {"admin": "owner"}


def test_list_shows_only_the_callers_workspaces(api, user_token):
    # Given workspaces of two users, one of them shared
    bob = user_token("bob")
    api.ok("POST", WS, {"name": "admin-only"})
    api.ok("POST", WS, {"name": "shared"})
    api.ok("POST", WS, {"name": "bob-only"}, token=bob)
    add_member(api, "shared", "bob", "reader")

    # Then each sees only their own, with their role
    admin_list = {w["name"]: w["role"] for w in api.ok("GET", WS)["workspaces"]}
    bob_list = {w["name"]: w["role"] for w in api.ok("GET", WS, token=bob)["workspaces"]}
    assert admin_list == {"admin-only": "owner", "shared": "owner"}
    assert bob_list == {"bob-only": "owner", "shared": "reader"}
    assert api.ok("GET", WS, token=user_token("carol"))["workspaces"] == []


def test_missing_workspace_is_404(api):
    assert api.call("GET", f"{WS}/nope")[0] == 404
    assert api.call("DELETE", f"{WS}/nope")[0] == 404
    assert api.call("GET", f"{WS}/nope/members")[0] == 404


# --- delete -----------------------------------------------------------------------------------------
def test_delete_empty_workspace(api):
    api.ok("POST", WS, {"name": "tmp"})
    result = api.ok("DELETE", f"{WS}/tmp")
    assert result["deleted"] is True and result["runs"] == 0
    assert api.call("GET", f"{WS}/tmp")[0] == 404
    assert api.ok("GET", WS)["workspaces"] == []
    api.ok("POST", WS, {"name": "tmp"}, status=201)


def test_delete_refused_while_not_empty_then_forced(api, services):
    # Given a workspace with a run, a child run, metrics, a log and an output file, and a neighbour
    api.ok("POST", WS, {"name": "busy"})
    api.ok("POST", WS, {"name": "neighbour"})
    run = new_run(api, "busy", status="Running")
    child = new_run(api, "busy", parent_id=run["id"])
    other = new_run(api, "neighbour")
    for workspace, run_id in (("busy", run["id"]), ("neighbour", other["id"])):
        api.ok("POST", f"{WS}/{workspace}/runs/{run_id}/metrics", {"metrics": [{"name": "loss", "values": [1.0, 0.5]}]})
    api.ok("POST", f"{WS}/busy/runs/{run['id']}/logs/stdout", {"text": "hello\n"})
    uploads = api.ok("POST", f"{WS}/busy/runs/{run['id']}/outputs/uploads", {"paths": ["model.bin"]})["uploads"]
    assert uploads[0]["path"] == "model.bin"
    busy_prefix = services.workspaces.record("busy")["blob_prefix"]
    neighbour_prefix = services.workspaces.record("neighbour")["blob_prefix"]
    services.ctx.blobs.put_bytes(services.outputs.run_prefix("busy", run["id"]) + "outputs/model.bin", b"weights")
    services.ctx.blobs.put_bytes(services.outputs.run_prefix("neighbour", other["id"]) + "outputs/keep.bin", b"keep")
    assert [b.key for b in services.ctx.blobs.list_all(busy_prefix)]

    # When deleted without force: refused, nothing changed
    status, body = api.call("DELETE", f"{WS}/busy")
    assert status == 409, body
    assert api.ok("GET", f"{WS}/busy/runs/{run['id']}")["metrics"] == {"loss": 0.5}
    status, body = api.call("DELETE", f"{WS}/busy?force=false")
    assert status == 409

    # When forced
    result = api.ok("DELETE", f"{WS}/busy?force=true")
    assert result["deleted"] is True and result["runs"] == 2 and result["blobs"] == 1

    # Then the runs, their metrics, logs and blobs are gone; the neighbour is untouched
    assert api.call("GET", f"{WS}/busy")[0] == 404
    for run_id in (run["id"], child["id"]):
        assert list(services.ctx.table.query_all(Query(table_keys.run_pk(run_id)))) == []
    assert list(services.ctx.table.query_all(Query(table_keys.workspace_pk("busy")))) == []
    assert list(services.ctx.blobs.list_all(busy_prefix)) == []
    assert [b.key for b in services.ctx.blobs.list_all(neighbour_prefix)] == [
        services.outputs.run_prefix("neighbour", other["id"]) + "outputs/keep.bin"]
    assert api.ok("GET", f"{WS}/neighbour/runs/{other['id']}")["metrics"] == {"loss": 0.5}

    # And the workspace can be created again, empty
    api.ok("POST", WS, {"name": "busy"}, status=201)
    assert api.call("GET", f"{WS}/busy/runs/{run['id']}")[0] == 404
    assert api.ok("GET", f"{WS}/busy/experiments")["experiments"] == []
    assert services.workspaces.record("busy")["blob_prefix"] != busy_prefix
    assert roles(api, "busy") == {"admin": "owner"}


def test_only_an_owner_deletes(api, user_token):
    bob = user_token("bob")
    api.ok("POST", WS, {"name": "guarded"})
    add_member(api, "guarded", "bob", "contributor")
    status, body = api.call("DELETE", f"{WS}/guarded?force=true", token=bob)
    assert status == 403
    api.ok("GET", f"{WS}/guarded")


def test_bad_force_value_is_400(api):
    api.ok("POST", WS, {"name": "ws"})
    status, body = api.call("DELETE", f"{WS}/ws?force=maybe")
    assert status == 400 and body["field"] == "force"
    api.ok("GET", f"{WS}/ws")


# --- roles ------------------------------------------------------------------------------------------
def test_reader_reads_but_cannot_write(api, user_token):
    # Given a workspace with a running run, and a reader
    reader = user_token("rita")
    api.ok("POST", WS, {"name": "ws"})
    run = new_run(api, "ws", status="Running")
    api.ok("POST", f"{WS}/ws/runs/{run['id']}/metrics", {"metrics": [{"name": "acc", "values": [0.1]}]})
    add_member(api, "ws", "rita", "reader")
    base = f"{WS}/ws/runs/{run['id']}"

    # Then every read works
    assert api.ok("GET", f"{WS}/ws", token=reader)["role"] == "reader"
    assert api.ok("GET", f"{WS}/ws/experiments", token=reader)["experiments"][0]["name"] == "exp"
    assert api.ok("GET", f"{WS}/ws/experiments/exp", token=reader)["run_count"] == 1
    assert api.ok("GET", f"{WS}/ws/experiments/exp/runs", token=reader)["total"] == 1
    assert api.ok("GET", base, token=reader)["id"] == run["id"]
    assert api.ok("GET", f"{base}/metrics", token=reader)["metrics"]["acc"]["latest"] == 0.1
    assert api.ok("GET", f"{base}/metric-history?name=acc", token=reader)["values"] == [0.1]
    assert api.ok("GET", f"{base}/logs", token=reader)["streams"] == []
    assert api.ok("GET", f"{base}/outputs", token=reader)["files"] == []
    assert api.ok("GET", f"{base}/children", token=reader)["runs"] == []
    assert "rita" in roles(api, "ws", token=reader)

    # And every write is 403
    writes = [
        ("POST", f"{WS}/ws/runs", {"experiment": "exp"}),
        ("POST", f"{base}/metrics", {"metrics": [{"name": "acc", "values": [0.2]}]}),
        ("POST", f"{base}/logs/stdout", {"text": "x"}),
        ("PATCH", f"{base}/tags", {"tags": {"a": "b"}}),
        ("POST", f"{base}/properties", {"properties": {"a": "b"}}),
        ("POST", f"{base}/status", {"status": "Completed"}),
        ("POST", f"{base}/cancel", None),
        ("POST", f"{base}/outputs/uploads", {"paths": ["a.txt"]}),
        ("POST", f"{base}/images", {"name": "plot"}),
        ("POST", f"{WS}/ws/members", {"user": "rita", "role": "owner"}),
        ("DELETE", f"{WS}/ws", None),
        ("DELETE", f"{WS}/ws/members/admin", None),
    ]
    for method, path, body in writes:
        status, reply = api.call(method, path, body, token=reader)
        assert status == 403, (method, path, reply)
        assert reply["code"] == "Forbidden"

    # And nothing changed
    shown = api.ok("GET", base)
    assert shown["status"] == "Running" and shown["tags"] == {} and shown["properties"] == {}
    assert shown["metrics"] == {"acc": 0.1}
    assert api.ok("GET", f"{WS}/ws/experiments/exp")["run_count"] == 1
    assert roles(api, "ws") == {"admin": "owner", "rita": "reader"}


def test_contributor_writes_runs_but_does_not_manage(api, user_token):
    contributor = user_token("cody")
    user_token("other")
    api.ok("POST", WS, {"name": "ws"})
    add_member(api, "ws", "cody", "contributor")

    run = new_run(api, "ws", token=contributor, status="Running")
    assert run["submitted_by"] == "cody"
    api.ok("POST", f"{WS}/ws/runs/{run['id']}/metrics", {"metrics": [{"name": "m", "values": [1]}]}, token=contributor)
    api.ok("POST", f"{WS}/ws/runs/{run['id']}/status", {"status": "Completed"}, token=contributor)

    for method, path, body in [
        ("POST", f"{WS}/ws/members", {"user": "other", "role": "reader"}),
        ("POST", f"{WS}/ws/members", {"user": "cody", "role": "owner"}),
        ("DELETE", f"{WS}/ws/members/admin", None),
        ("DELETE", f"{WS}/ws", None),
        ("DELETE", f"{WS}/ws?force=true", None),
    ]:
        status, reply = api.call(method, path, body, token=contributor)
        assert status == 403, (method, path, reply)
    assert roles(api, "ws") == {"admin": "owner", "cody": "contributor"}
    api.ok("GET", f"{WS}/ws")


def test_non_member_gets_404_everywhere(api, user_token):
    # Given a workspace with a run that outsider is not a member of
    outsider = user_token("olga")
    api.ok("POST", WS, {"name": "secret"})
    run = new_run(api, "secret", status="Running")
    base = f"{WS}/secret/runs/{run['id']}"

    routes = [
        ("GET", f"{WS}/secret", None),
        ("DELETE", f"{WS}/secret", None),
        ("GET", f"{WS}/secret/members", None),
        ("POST", f"{WS}/secret/members", {"user": "olga", "role": "owner"}),
        ("DELETE", f"{WS}/secret/members/admin", None),
        ("DELETE", f"{WS}/secret/members/olga", None),
        ("GET", f"{WS}/secret/experiments", None),
        ("GET", f"{WS}/secret/experiments/exp", None),
        ("GET", f"{WS}/secret/experiments/exp/runs", None),
        ("POST", f"{WS}/secret/runs", {"experiment": "exp"}),
        ("GET", base, None),
        ("GET", f"{base}/children", None),
        ("PATCH", f"{base}/tags", {"tags": {"a": "b"}}),
        ("POST", f"{base}/status", {"status": "Completed"}),
        ("POST", f"{base}/metrics", {"metrics": [{"name": "m", "values": [1]}]}),
        ("GET", f"{base}/metrics", None),
        ("GET", f"{base}/metric-history?name=m", None),
        ("GET", f"{base}/logs", None),
        ("GET", f"{base}/logs/stdout", None),
        ("GET", f"{base}/outputs", None),
        ("GET", f"{base}/outputs/download?path=a", None),
    ]
    # Then each answers 404, exactly as for a workspace that does not exist
    for method, path, body in routes:
        status, reply = api.call(method, path, body, token=outsider)
        assert status == 404, (method, path, reply)
        assert reply["code"] == "NotFound"
        missing = api.call(method, path.replace("/secret", "/absent", 1), body, token=outsider)
        assert missing[0] == 404
    assert api.ok("GET", base)["status"] == "Running"
    assert roles(api, "secret") == {"admin": "owner"}


def test_owner_adds_changes_and_removes_members(api, user_token):
    reader = user_token("rob")
    user_token("sue")
    api.ok("POST", WS, {"name": "team"})
    added = add_member(api, "team", "rob", "reader")
    assert added["user"] == "rob" and added["role"] == "reader" and added["added_by"] == "admin"
    add_member(api, "team", "sue", "contributor")
    assert roles(api, "team") == {"admin": "owner", "rob": "reader", "sue": "contributor"}

    # promote
    add_member(api, "team", "rob", "contributor")
    assert roles(api, "team")["rob"] == "contributor"
    new_run(api, "team", token=reader)

    # remove
    assert api.ok("DELETE", f"{WS}/team/members/sue") == {"removed": "sue"}
    assert roles(api, "team") == {"admin": "owner", "rob": "contributor"}
    assert api.call("DELETE", f"{WS}/team/members/sue")[0] == 404


def test_add_member_errors(api, user_token):
    user_token("bob")
    api.ok("POST", WS, {"name": "team"})
    status, body = api.call("POST", f"{WS}/team/members", {"user": "ghost", "role": "reader"})
    assert status == 404
    status, body = api.call("POST", f"{WS}/team/members", {"user": "bob", "role": "admin"})
    assert status == 400 and body["field"] == "role"
    assert roles(api, "team") == {"admin": "owner"}


def test_last_owner_cannot_be_removed(api, user_token):
    bob = user_token("bob")
    api.ok("POST", WS, {"name": "team"})

    # the sole owner cannot leave
    status, body = api.call("DELETE", f"{WS}/team/members/admin")
    assert status == 409, body
    assert roles(api, "team") == {"admin": "owner"}

    # with a second owner, one of them can go, but not the last one
    add_member(api, "team", "bob", "owner")
    api.ok("DELETE", f"{WS}/team/members/admin", token=bob)
    assert roles(api, "team", token=bob) == {"bob": "owner"}
    assert api.call("GET", f"{WS}/team")[0] == 404
    status, body = api.call("DELETE", f"{WS}/team/members/bob", token=bob)
    assert status == 409
    assert roles(api, "team", token=bob) == {"bob": "owner"}


def test_last_owner_cannot_be_demoted(api, user_token):
    user_token("bob")
    api.ok("POST", WS, {"name": "team"})
    add_member(api, "team", "bob", "reader")
    status, body = api.call("POST", f"{WS}/team/members", {"user": "admin", "role": "contributor"})
    assert status == 409, body
    assert roles(api, "team") == {"admin": "owner", "bob": "reader"}
    # with another owner, demotion is fine
    add_member(api, "team", "bob", "owner")
    add_member(api, "team", "admin", "reader")
    assert roles(api, "team") == {"admin": "reader", "bob": "owner"}


def test_member_can_leave(api, user_token):
    members = {name: user_token(name) for name in ("rae", "con")}
    api.ok("POST", WS, {"name": "team"})
    add_member(api, "team", "rae", "reader")
    add_member(api, "team", "con", "contributor")

    for name, token in members.items():
        assert api.ok("DELETE", f"{WS}/team/members/{name}", token=token) == {"removed": name}
        assert api.call("GET", f"{WS}/team", token=token)[0] == 404
        assert api.ok("GET", WS, token=token)["workspaces"] == []
    assert roles(api, "team") == {"admin": "owner"}


def test_reader_cannot_remove_others(api, user_token):
    reader = user_token("rae")
    user_token("con")
    api.ok("POST", WS, {"name": "team"})
    add_member(api, "team", "rae", "reader")
    add_member(api, "team", "con", "contributor")
    assert api.call("DELETE", f"{WS}/team/members/con", token=reader)[0] == 403
    assert roles(api, "team") == {"admin": "owner", "rae": "reader", "con": "contributor"}


# --- concurrency ------------------------------------------------------------------------------------
def test_concurrent_creates_of_one_name(api):
    # Given two threads that start at the same moment
    barrier = threading.Barrier(2)
    results: list[int] = []

    def create():
        barrier.wait()
        results.append(api.call("POST", WS, {"name": "race"})[0])

    threads = [threading.Thread(target=create) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then exactly one wins
    assert sorted(results) == [201, 409]
    assert roles(api, "race") == {"admin": "owner"}
    assert [w["name"] for w in api.ok("GET", WS)["workspaces"]] == ["race"]



def test_two_owners_removing_each_other_at_once_leave_one_owner(services):
    # Given a workspace with exactly two owners
    admin = services.identity.authenticate(f"Bearer {services.identity.bootstrap_admin()}")
    services.identity.create_user("carol")
    carol = services.identity.authenticate(f"Bearer {services.identity.create_token('carol')['token']}")
    services.workspaces.create(admin, "duo")
    services.workspaces.add_member(admin, "duo", "carol", "owner")

    # When each removes the other at the same time
    def remove(caller_and_target):
        caller, target = caller_and_target
        try:
            services.workspaces.remove_member(caller, "duo", target)
            return "removed"
        except (Conflict, NotFound):  # the last owner, or no longer a member at all
            return "refused"

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(remove, [(admin, "carol"), (carol, "admin")]))

    # Then exactly one removal lands and one owner is left
    members = services.ctx.table.query_all(Query("WS#duo", sk_prefix="MEMBER#"))
    assert [m["role"] for m in members] == ["owner"]
    assert outcomes == ["refused", "removed"]


# --- a forced delete takes the workspace's compute with it ---------------------------------------
def test_a_forced_delete_cancels_runs_and_deletes_the_batch_resources_nimbus_made(api, services):
    from chalicelib.compute.instance_queue import slots_pk
    from chalicelib.compute.target_dispatcher import TargetDispatcher
    from chalicelib.services.cluster_lifecycle import PENDING_PK
    import hashlib

    from tests.server.api.test_compute import CLUSTER, QUEUE_ARN
    from tests.server.api.test_submit import RecordingDispatcher
    from tests.server.unit.fake_provisioner import StagedProvisioner

    # Given a workspace with a made cluster, one still being made, an attached queue, and an instance
    # target with a leased run and a queued one
    local = RecordingDispatcher()
    services.dispatcher = TargetDispatcher({"local": local, "instance": services.instance_queue})
    services.provisioner = provisioner = StagedProvisioner()
    api.ok("POST", WS, {"name": "team"})
    content = b"print('hello')\n"
    digest = hashlib.sha256(content).hexdigest()
    services.ctx.blobs.put_bytes(f"{services.workspaces.record('team')['blob_prefix']}snapshots/content/{digest}", content)
    snapshot = api.ok("POST", f"{WS}/team/snapshots", {"files": [{"path": "train.py", "digest": digest,
                                                                   "size": len(content)}]})["id"]
    computes = f"{WS}/team/computes"
    api.ok("POST", computes, {"name": "cluster", "type": "batch", "settings": CLUSTER}, status=202)
    made = api.ok("GET", f"{computes}/cluster")["resources"]
    starting = api.ok("POST", computes, {"name": "starting", "type": "batch", "settings": CLUSTER}, status=202)
    api.ok("POST", computes, {"name": "shared", "type": "batch", "settings": {"job_queue_arn": QUEUE_ARN}})
    api.ok("POST", computes, {"name": "box", "type": "instance", "settings": {"max_concurrent_runs": 2}})
    config = {"script": "train.py", "compute": "box"}
    runs = [api.ok("POST", f"{WS}/team/runs", {"experiment": "exp", "snapshot_id": snapshot, "run_config": config})
            for _ in range(2)]
    claimed = api.ok("POST", f"{computes}/box/claim")
    local_run = api.ok("POST", f"{WS}/team/runs", {"experiment": "exp", "snapshot_id": snapshot,
                                                   "run_config": {"script": "train.py"}})

    # When the owner deletes it with force
    result = api.ok("DELETE", f"{WS}/team?force=true")

    # Then the resources Nimbus made are deleted (not the attached queue), the runs were canceled (the
    # local one's job stopped), and nothing of the targets is left in the table
    assert result["deleted"] is True and result["compute_targets"] == 4 and result["runs"] == 3
    assert sorted(provisioner.dismantled, key=str) == sorted([made, starting["resources"]], key=str)
    assert local.canceled == [local_run["id"]]
    assert api.call("GET", f"{WS}/team/runs/{claimed['run']['id']}", token=claimed["run_token"])[0] in (401, 404)
    for pk in (slots_pk("team", "box"), table_keys.active_runs_pk("team", "box"), table_keys.instance_queue_pk("team", "box"),
               PENDING_PK, table_keys.workspace_pk("team")):
        assert list(services.ctx.table.query_all(Query(pk))) == [], pk
    assert all(api.call("GET", f"{WS}/team/runs/{r['id']}")[0] == 404 for r in runs)


def test_a_forced_delete_that_cannot_delete_batch_resources_leaves_the_workspace(api, services):
    from tests.server.api.test_compute import CLUSTER
    from tests.server.unit.fake_provisioner import StagedProvisioner

    api.ok("POST", WS, {"name": "team"})
    services.provisioner = StagedProvisioner()
    api.ok("POST", f"{WS}/team/computes", {"name": "cluster", "type": "batch", "settings": CLUSTER}, status=202)
    services.provisioner = None  # this deployment cannot reach AWS Batch

    status, body = api.call("DELETE", f"{WS}/team?force=true")
    assert status == 400 and "cannot be deleted from here" in body["message"]
    assert api.ok("GET", f"{WS}/team/computes/cluster")["state"] == "Creating"  # left as it was
    assert api.ok("GET", f"{WS}/team")["name"] == "team"
