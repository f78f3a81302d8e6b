"""Uploading a folder never follows a link out of it: a run's outputs cannot publish the machine's files."""
from __future__ import annotations

import os

from nimbus.run_outputs import RunOutputs
from nimbus.transfers import folder_files


class RecordingClient:
    """Signs every path and keeps what each upload read."""

    url = "http://service"

    def __init__(self):
        self.sent: dict[str, bytes] = {}

    def post(self, path, body, retry=False):
        return {"uploads": [{"path": p, "url": f"put://{p}"} for p in body["paths"]]}

    def upload(self, url, stream, progress=None):
        data = stream.read()
        self.sent[url.removeprefix("put://")] = data
        return len(data)


class Workspace:
    name = "ws"

    def __init__(self):
        self.client = RecordingClient()


class Outputs(RunOutputs):
    def __init__(self):
        self.workspace, self.id = Workspace(), "r1"

    def _outputs_path(self, *more):
        return "/v1/workspaces/ws/runs/r1/outputs/" + "/".join(more)


def a_folder_with_links(tmp_path):
    """outputs/ with a file, a link to it, a link to a secret outside, a dangling link and a folder link."""
    secret = tmp_path / "home" / "signing.key"
    secret.parent.mkdir()
    secret.write_text("the platform's key")
    outputs = tmp_path / "outputs"
    (outputs / "sub").mkdir(parents=True)
    (outputs / "sub" / "model.pkl").write_text("weights")
    os.symlink("sub/model.pkl", outputs / "latest.pkl")
    os.symlink(secret, outputs / "key")
    os.symlink("../home/signing.key", outputs / "sub" / "relative-key")
    os.symlink(tmp_path / "nowhere", outputs / "dangling")
    os.symlink(secret.parent, outputs / "home")
    return outputs


def test_links_out_of_the_folder_are_left_out_and_links_inside_read_their_file(tmp_path):
    outputs = a_folder_with_links(tmp_path)
    found, left_out = folder_files(outputs)
    assert [(relative, path.name) for relative, path in found] == [("latest.pkl", "model.pkl"),
                                                                   ("sub/model.pkl", "model.pkl")]
    assert left_out == ["dangling", "home", "key", "sub/relative-key"]


def test_an_uploaded_folder_holds_no_byte_of_a_file_outside_it(tmp_path, capsys):
    outputs = a_folder_with_links(tmp_path)
    run = Outputs()
    stored = run.upload_folder("outputs", outputs, show_progress=False)
    assert [item["path"] for item in stored] == ["outputs/latest.pkl", "outputs/sub/model.pkl"]
    assert run.workspace.client.sent == {"outputs/latest.pkl": b"weights", "outputs/sub/model.pkl": b"weights"}
    warned = capsys.readouterr().err
    assert "key is a link out of" in warned and "not uploaded" in warned
