"""`nimbus dataset …` against the live in-process platform."""
from __future__ import annotations

import pytest

CSV = "x,label\n1,a\n2,b\n3,a\n"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NIMBUS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def uploaded(nimbus, platform, tmp_path):
    source = tmp_path / "data"
    source.mkdir()
    (source / "rows.csv").write_text(CSV)
    assert nimbus("datastore", "upload", "workspaceblobstore", str(source), "--target-path", "t").exit_code == 0
    return source


def test_register_show_profile_download_and_verify(nimbus, uploaded, tmp_path):
    made = nimbus("dataset", "register", "rows", "--type", "tabular", "--path", "workspaceblobstore:t/rows.csv",
                  "--tag", "team=ml", "-o", "json", json_output=True)
    assert (made["version"], made["row_count"], made["tags"], made["existing"]) == (1, 3, {"team": "ml"}, False)
    again = nimbus("dataset", "register", "rows", "--type", "tabular", "--path", "workspaceblobstore:t/rows.csv",
                   "-o", "json", json_output=True)
    assert again["existing"] and again["version"] == 1
    table = nimbus("dataset", "list")
    assert table.stdout.splitlines()[0].split()[:3] == ["NAME", "VERSION", "TYPE"] and "rows" in table.stdout
    shown = nimbus("dataset", "show", "rows:1")
    assert shown.exit_code == 0 and "fingerprint" in shown.stdout
    profile = nimbus("dataset", "profile", "rows", "-o", "json", json_output=True)
    assert {p["name"]: p["distinct"] for p in profile} == {"x": 3, "label": 2}
    got = nimbus("dataset", "download", "rows", "-d", str(tmp_path / "copy"))
    assert got.exit_code == 0 and (tmp_path / "copy" / "t" / "rows.csv").read_text() == CSV
    assert "matches" in nimbus("dataset", "verify", "rows").stdout
    (uploaded / "more.csv").write_text(CSV)
    nimbus("datastore", "upload", "workspaceblobstore", str(uploaded / "more.csv"), "--target-path", "t")
    nimbus("dataset", "register", "all_rows", "--type", "file", "--path", "workspaceblobstore:t/")
    (uploaded / "more.csv").write_text(CSV + "4,b\n")
    nimbus("datastore", "upload", "workspaceblobstore", str(uploaded / "more.csv"), "--target-path", "t",
           "--overwrite")
    changed = nimbus("dataset", "verify", "all_rows")
    assert changed.exit_code == 3 and "changed: workspaceblobstore:t/more.csv" in changed.stdout


def test_bad_paths_and_unknown_datasets(nimbus, uploaded):
    refused = nimbus("dataset", "register", "x", "--type", "file", "--path", "no-colon")
    assert refused.exit_code == 2 and "DATASTORE:PATH" in refused.stderr
    nothing = nimbus("dataset", "register", "x", "--type", "file", "--path", "workspaceblobstore:t/*.parquet")
    assert nothing.exit_code == 1 and "matches no file" in nothing.stderr
    missing = nimbus("dataset", "show", "ghost")
    assert missing.exit_code == 1 and "ghost" in missing.stderr
    latest = nimbus("dataset", "delete", "ghost")
    assert latest.exit_code == 2 and "NAME:VERSION" in latest.stderr
