"""The `nimbus` command line (entry point: nimbus.cli.main:cli)."""
