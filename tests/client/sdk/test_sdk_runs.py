"""Runs: lifecycle, children, tags and properties, search, logs and typed errors."""
from __future__ import annotations

import pytest

from nimbus import (
    AuthenticationError, ConflictError, Experiment, ForbiddenError, InvalidError, NotFoundError, Run, Workspace,
)
from nimbus import experiment as experiment_module


@pytest.fixture
def experiment(workspace):
    return Experiment(workspace, "runs")


def test_start_logging_makes_a_running_run(experiment):
    run = experiment.start_logging(display_name="first", tags={"lr": 0.1}, properties={"seed": 7})
    assert run.status == "Running" and run.display_name == "first"
    assert run.tags == {"lr": "0.1"} and run.properties == {"seed": "7"}
    assert run.experiment.name == "runs" and run.parent is None
    assert experiment.run_count == 1


def test_context_manager_completes_or_fails(experiment):
    with experiment.start_logging() as run:
        run.log("acc", 1.0)
    assert run.get_status() == "Completed"

    with pytest.raises(RuntimeError):
        with experiment.start_logging() as failed:
            raise RuntimeError("diverged")
    details = failed.get_details()
    assert details["status"] == "Failed"
    assert details["error"]["message"] == "diverged" and details["error"]["type"] == "RuntimeError"


def test_interrupting_the_context_manager_cancels_the_run(experiment):
    with pytest.raises(KeyboardInterrupt):
        with experiment.start_logging() as run:
            raise KeyboardInterrupt
    assert run.get_status() == "Canceled"


def test_fail_and_cancel(experiment):
    run = experiment.start_logging()
    run.fail("out of memory", error_code="OOM")
    assert run.get_details()["error"] == {"message": "out of memory", "code": "OOM"}
    other = experiment.start_logging()
    other.cancel()
    assert other.get_status() == "Canceled"
    with pytest.raises(ConflictError):
        other.complete()


def test_children_to_depth_two(experiment):
    root = experiment.start_logging()
    first, second = root.child_run("a"), root.child_run("b", tags={"k": "v"})
    grandchild = first.child_run("a.1")
    assert grandchild.status == "Running" and grandchild.get_details()["depth"] == 2
    assert grandchild.parent.id == first.id
    assert [c.id for c in root.get_children()] == [first.id, second.id]
    assert [c.id for c in root.get_children(recursive=True)] == [first.id, second.id, grandchild.id]
    assert second.tags == {"k": "v"}
    assert [r.id for r in experiment.get_runs()] == [root.id]
    assert {r.id for r in experiment.get_runs(include_children=True)} == {root.id, first.id, second.id, grandchild.id}


def test_tags_change_but_properties_are_write_once(experiment):
    run = experiment.start_logging()
    run.set_tags({"a": "1", "b": 2})
    run.tag("flag")
    run.remove_tags(["a"])
    assert run.get_tags() == {"b": "2", "flag": ""}
    run.add_properties({"commit": "abc"})
    run.add_properties({"commit": "abc"})  # the same value again is fine
    with pytest.raises(ConflictError, match="write-once"):
        run.add_properties({"commit": "def"})
    assert run.get_properties() == {"commit": "abc"}


def test_get_runs_filters_orders_and_pages(experiment, monkeypatch):
    monkeypatch.setattr(experiment_module, "PAGE_SIZE", 2)
    for index, accuracy in enumerate([0.2, 0.9, 0.5, 0.7]):
        with experiment.start_logging(display_name=f"r{index}", tags={"even": str(index % 2 == 0)}) as run:
            run.log("acc", accuracy)
    experiment.start_logging(display_name="open")

    assert [r.display_name for r in experiment.get_runs()] == ["open", "r3", "r2", "r1", "r0"]
    assert [r.display_name for r in experiment.get_runs(status="Running")] == ["open"]
    assert [r.display_name for r in experiment.get_runs(tags={"even": "True"})] == ["r2", "r0"]
    assert [r.display_name for r in experiment.get_runs(metric_filters="acc>0.4", order_by="metrics.acc desc")] == \
        ["r1", "r3", "r2"]
    assert [r.display_name for r in experiment.get_runs(order_by=("metrics.acc", "asc"), max_results=3)] == \
        ["r0", "r2", "r3"]
    assert experiment.run_count == 5


def test_logs_are_read_from_an_offset(experiment):
    run = experiment.start_logging()
    run.append_log("hello ")
    run.append_log("world\n")
    assert run.get_logs()["text"] == "hello world\n"
    reply = run.get_logs(offset=6)
    assert (reply["text"], reply["next_offset"], reply["run_ended"]) == ("world\n", 12, False)
    run.complete()
    assert run.wait_for_completion(poll_seconds=0.01)["status"] == "Completed"


def test_a_missing_run_is_not_found(workspace):
    with pytest.raises(NotFoundError, match="not found") as missing:
        Run.get(workspace, "nosuchrun")
    assert missing.value.status == 404 and missing.value.code == "NotFound"


def test_a_bad_token_is_an_authentication_error(platform):
    workspace = Workspace("default", platform.url, "nmb_" + "x" * 43)
    with pytest.raises(AuthenticationError, match="invalid or revoked token"):
        workspace.get_details()


def test_a_reader_may_not_start_runs(platform, workspace, user_token):
    token = user_token("rita")
    workspace.add_member("rita", "reader")
    as_reader = Workspace("default", platform.url, token)
    with pytest.raises(ForbiddenError, match="contributor"):
        Experiment(as_reader, "runs").start_logging()


def test_invalid_requests_name_the_field(experiment):
    with pytest.raises(InvalidError) as invalid:
        experiment.start_logging(tags={"": "empty key"})
    assert invalid.value.field and invalid.value.status == 400
