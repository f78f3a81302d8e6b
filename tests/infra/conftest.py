"""infra/ is build-time code, not an installed package: its tests import it from the repository root.

Appended, so installed packages still come first; only `infra` is found here.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.append(ROOT)
