"""The data both sides of a comparison log and query, so Nimbus and MLflow store exactly the same thing.

Standard library only: the MLflow baseline imports it from its own virtual environment.
"""
from __future__ import annotations

import math
import random

# ingest.py: one run, METRICS metrics of STEPS steps each
METRICS = 10
STEPS = 10_000
MLFLOW_BATCH = 1_000  # metrics per log_batch call, MLflow's own limit
SYNC_LOG_CALLS = 300  # MLflow's synchronous log_metric calls timed one by one

# runs.py: RUNS runs with 5 tags and 3 metrics each, then searches and history reads
RUNS = 2_000
HISTORY_STEPS = 10_000
REPEAT = 30  # timed requests per query, after two untimed ones
PAGE = 100
MODELS = ("cnn", "rnn", "transformer", "linear")
SEARCH_TAG = ("model", "cnn")
SEARCH_METRIC = ("acc", 0.5)  # acc > 0.5
ORDER_METRIC = "acc"  # descending


def point(metric: int, step: int) -> float:
    """The value of metric `metric` at `step` in the ingest workload."""
    return math.sin(step * 0.001 * (metric + 1)) + metric


def run_tags(index: int) -> dict[str, str]:
    return {"model": MODELS[index % len(MODELS)], "team": f"team-{index % 3}", "dataset": f"ds-{index % 5}",
            "seed": str(index), "sweep": "bench"}


def run_metrics(index: int) -> dict[str, float]:
    rng = random.Random(index)
    acc = rng.random()
    return {"acc": acc, "loss": 1.0 - acc + rng.random() * 0.1, "f1": rng.random()}


def expected_matches(runs: int = RUNS) -> int:
    """How many of the first `runs` runs the search filter matches (both systems must agree)."""
    key, value = SEARCH_TAG
    name, threshold = SEARCH_METRIC
    return sum(1 for i in range(runs) if run_tags(i)[key] == value and run_metrics(i)[name] > threshold)


def history_point(step: int) -> float:
    return 1.0 / (1.0 + step * 0.01)
