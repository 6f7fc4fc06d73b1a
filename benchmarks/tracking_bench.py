"""The tracking store's cost: SQLite file vs the team server (PostgreSQL + mlflow server).

    python benchmarks/tracking_bench.py [--runs 10000] [--config experiments/microcal_quick.yaml]

Same machine, one run: (1) the quick search (`python -m tune.search`) against each store:
wall time, and the extra time per trial (the difference of the two wall times divided by
the trials: every trial's mirrored run, params and per-epoch metrics travel over HTTP); (2) `search_runs` latency over `--runs` runs (tags
and a metric each, created in batches) in each store: a filter on a tag, ordered by a
metric, first page of 100. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
from mlflow.entities import Metric, RunTag

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from mammo_core.config import load_experiment  # noqa: E402
from tune.tracking_server import start, stop  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def quick_search(uri: str, config: str, storage: Path) -> float:
    """Returns the wall seconds of the quick search against `uri`."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "RAY_ADDRESS")}
    env.update(MLFLOW_TRACKING_URI=uri, MAMMO_RAY_STORAGE=str(storage))
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "tune.search", "--config", config], cwd=ROOT,
                   env=env, check=True, capture_output=True)
    return time.monotonic() - started


def fill(uri: str, n: int) -> tuple[float, str]:
    """Creates `n` runs with two tags and a metric each; returns (seconds, experiment id)."""
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment(f"bench-{time.time_ns()}")
    started = time.monotonic()
    for i in range(n):
        run = client.create_run(experiment).info.run_id
        client.log_batch(run, metrics=[Metric("auc", (i % 997) / 997, 0, 0)],
                         tags=[RunTag("kind", "trial" if i % 10 else "fold"),
                               RunTag("fold", str(i % 5))])
    return time.monotonic() - started, experiment


def query_ms(uri: str, experiment: str, repeats: int = 20) -> float:
    """Returns the median milliseconds of one filtered, ordered search_runs page."""
    client = mlflow.MlflowClient(uri)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        client.search_runs([experiment], "tags.kind = 'fold' and tags.fold = '3'",
                           order_by=["metrics.auc DESC"], max_results=100)
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--config", default="experiments/microcal_quick.yaml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        data, port = folder / "team", free_port()
        server = start(data, "127.0.0.1", port, auth=False)
        stores = {"SQLite file": f"sqlite:///{folder / 'mlflow.db'}",
                  "PostgreSQL + mlflow server (HTTP)": server}
        try:
            rows = {}
            for name, uri in stores.items():
                wall = quick_search(uri, args.config, folder / f"ray-{len(rows)}")
                filled, experiment = fill(uri, args.runs)
                rows[name] = (wall, filled, query_ms(uri, experiment))
                print(f"{name}: search {wall:.1f} s, {args.runs} runs in {filled:.0f} s, "
                      f"query {rows[name][2]:.1f} ms", flush=True)
        finally:
            stop(data)
    base = rows["SQLite file"][0]
    experiment = load_experiment(ROOT / args.config)
    trials = experiment.cross_validation.n_folds * experiment.search.trials_per_fold
    print(f"\n| store | quick search wall (s) | vs SQLite | per trial vs SQLite (s, {trials} "
          f"trials) | creating {args.runs} runs (s) | search_runs, filtered + ordered, 100 "
          "of them (ms, median of 20) |")
    print("|---|---|---|---|---|---|")
    for name, (wall, filled, query) in rows.items():
        print(f"| {name} | {wall:.1f} | {100 * (wall / base - 1):+.1f} % | "
              f"{(wall - base) / trials:+.2f} | {filled:.0f} | {query:.1f} |")


if __name__ == "__main__":
    main()
