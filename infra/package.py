"""`chalice package` with the client package inside: the API builds scoring functions from `nimbus/`.

Chalice ships `app.py`, `chalicelib/` and `vendor/`; scoring functions also need `nimbus` (entry
scripts call `from nimbus import Model`, the runtime lives in `chalicelib`). This puts the `nimbus`
sources into `vendor/` for the time of the packaging only.

    python infra/package.py --stage dev out/
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="dev")
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    vendor = ROOT / "vendor"
    if vendor.exists():
        sys.exit(f"{vendor} exists; it is created and removed by this script, move it away first")
    try:
        shutil.copytree(ROOT / "nimbus", vendor / "nimbus", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        chalice = Path(sys.executable).with_name("chalice")
        return subprocess.call([str(chalice), "package", "--stage", args.stage, "--merge-template",
                                "infra/template.json", str(args.out)], cwd=ROOT)
    finally:
        shutil.rmtree(vendor, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
