"""Where the local platform keeps its state: $NIMBUS_HOME, else ~/.nimbus. The one place that default lives."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping


def nimbus_home(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get("NIMBUS_HOME") or Path.home() / ".nimbus").expanduser()
