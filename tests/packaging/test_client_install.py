"""The SDK and CLI install and import without the server's packages, and `app` is not installed."""
from __future__ import annotations

import email
import pkgutil
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import nimbus

ROOT = Path(__file__).resolve().parents[2]
SERVER_PACKAGES = ("chalice", "chalicelib", "boto3", "botocore", "pydantic", "aws_lambda_powertools", "cryptography",
                   "moto", "waitress")

# Run in a fresh interpreter: a finder refuses the server's packages as if they were not installed.
BLOCKED_IMPORTS = """
import importlib, importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Absent())
for module in sys.argv[2].split(","):
    importlib.import_module(module)
from click.testing import CliRunner
from nimbus.cli.main import cli
result = CliRunner().invoke(cli, ["--help"])
assert result.exit_code == 0, result.output
up = CliRunner().invoke(cli, ["up", "--home", sys.argv[3]])
assert up.exit_code != 0 and "nimbus-ml[server]" in up.output, up.output
print("ok")
"""


def _client_modules() -> list[str]:
    # nimbus.__main__ would run the CLI on import
    return sorted(info.name for info in pkgutil.walk_packages(nimbus.__path__, "nimbus.") if info.name != "nimbus.__main__")


def test_every_client_module_imports_without_the_server_packages(tmp_path):
    modules = _client_modules()
    assert "nimbus.runtime.runner" in modules and "nimbus.cli.main" in modules
    done = subprocess.run([sys.executable, "-c", BLOCKED_IMPORTS, ",".join(SERVER_PACKAGES), ",".join(modules),
                           str(tmp_path / "home")], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")


def test_up_without_the_http_server_package_says_which_extra_to_install(tmp_path):
    """The HTTP server's package loads only once the platform starts: its absence is still the extra's message."""
    done = subprocess.run([sys.executable, "-c", BLOCKED_IMPORTS, "waitress", "nimbus.cli.main", str(tmp_path / "home")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    # Built from a copy of what the project ships: setuptools writes build/ beside the sources.
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("nimbus", "chalicelib"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "app.py", source / "app.py")  # present in the tree, so its absence from the wheel proves something
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(out), str(source)], check=True, capture_output=True, timeout=300)
    return zipfile.ZipFile(next(out.glob("nimbus_ml-*.whl")))


def test_the_wheel_installs_no_top_level_app_module(wheel):
    top_level = {name.split("/")[0] for name in wheel.namelist()}
    assert "app.py" not in top_level
    assert {"nimbus", "chalicelib"} <= top_level


def test_the_server_packages_are_an_extra(wheel):
    metadata_name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    metadata = email.message_from_bytes(wheel.read(metadata_name))
    requires = metadata.get_all("Requires-Dist") or []
    base = [line for line in requires if "extra ==" not in line]
    server = [line for line in requires if 'extra == "server"' in line]
    for package in ("chalice", "boto3", "pydantic", "aws-lambda-powertools", "cryptography", "waitress"):
        assert not any(line.lower().startswith(package) for line in base), base
        assert any(line.lower().startswith(package) for line in server), server
