"""Compute targets: the Dispatcher port that runs submitted jobs, and its adapters."""
