"""`python -m chalicelib.local [--home DIR] [--host H] [--port N]`: the local platform without the CLI."""
import argparse
from pathlib import Path

from chalicelib.local.platform import serve
from nimbus.home import nimbus_home

parser = argparse.ArgumentParser(prog="python -m chalicelib.local")
parser.add_argument("--home", type=Path, default=nimbus_home())
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8000)
arguments = parser.parse_args()
serve(arguments.home, arguments.host, arguments.port)
