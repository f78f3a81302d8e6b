"""Generate the CloudFormation template from the code (infra/stack/, troposphere and awacs).

    python infra/build.py          # rewrite infra/template.json
    python infra/build.py --check  # exit 1 if the committed template differs from what the code says

The table's keys and indexes come from chalicelib.store.schema, so the deployed table, the moto
fixtures and the SQLite adapter cannot disagree. The API function's permissions are declared once, as
the template's managed policy, which the template attaches to the role Chalice declares for the
functions (`chalice package --merge-template infra/template.json`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: chalicelib and infra.stack live at the root
    sys.path.insert(0, str(ROOT))

from infra.stack.template import render  # noqa: E402

TEMPLATE_PATH = ROOT / "infra" / "template.json"


def outputs() -> dict[Path, str]:
    """Every generated file and its expected text."""
    return {TEMPLATE_PATH: render()}


def stale() -> list[Path]:
    """Generated files whose committed text differs from what the code produces."""
    return [path for path, text in outputs().items()
            if not path.exists() or path.read_text(encoding="utf-8") != text]


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed template is out of date")
    args = parser.parse_args(argv)
    if args.check:
        out_of_date = stale()
        for path in out_of_date:
            print(f"{_shown(path)} is out of date: run `python infra/build.py`", file=sys.stderr)
        return 1 if out_of_date else 0
    for path, text in outputs().items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {_shown(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
