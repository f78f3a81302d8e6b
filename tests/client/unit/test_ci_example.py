"""The CI example is a valid workflow that submits with --wait, using the CI's secrets."""
from pathlib import Path

import yaml

WORKFLOW = Path(__file__).resolve().parents[3] / "examples" / "ci" / "train.yml"


def test_the_workflow_submits_and_waits_with_secrets():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    job = workflow["jobs"]["train"]
    assert job["env"]["NIMBUS_URL"] == "${{ secrets.NIMBUS_URL }}"
    assert job["env"]["NIMBUS_TOKEN"] == "${{ secrets.NIMBUS_TOKEN }}"
    commands = " ".join(step.get("run", "") for step in job["steps"])
    assert "nimbus run submit" in commands and "--wait" in commands
    assert "examples/iris" in commands and (WORKFLOW.parents[1] / "iris" / "train.py").exists()
