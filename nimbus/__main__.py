"""`python -m nimbus ...` runs the command line."""
from nimbus.cli.main import cli

cli(prog_name="nimbus")
