"""The tracking store's cost: SQLite file vs the team server (PostgreSQL + mlflow server).

    python benchmarks/tracking_bench.py [--runs 10000] [--repeats 2]
                                        [--config experiments/microcal_quick.yaml]

Same machine, one run: (1) the quick search (`python -m tune.search`) against each store,
`--repeats` times in ABBA order (SQLite, server, server, SQLite, ...) so that drift in the
machine's load falls on both alike: median wall time, and the trial mirror's own write
time per trial (`trial_mirror_seconds` of the fold runs: every trial's run, params and
per-epoch metrics travel over HTTP to the server); (2) `search_runs` latency over `--runs`
runs (tags and a metric each) in each store: a filter on a tag, ordered by a metric, first
page of 100. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
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
from serve.ports import free_port  # noqa: E402
from tune.tracking_server import start, stop  # noqa: E402


def quick_search(uri: str, config: str, storage: Path) -> tuple[float, float]:
    """Returns (wall seconds of the quick search against `uri`, seconds its trial mirror
    spent writing, summed over the folds)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_RUN_ID", "RAY_ADDRESS", "MLFLOW_REGISTRY_URI")}
    env.update(MLFLOW_TRACKING_URI=uri, MAMMO_RAY_STORAGE=str(storage))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "tune.search", "--config", config], cwd=ROOT,
                          env=env, check=True, capture_output=True, text=True)
    wall = time.monotonic() - started
    search_id = re.search(r"search (\w+) FINISHED", done.stdout).group(1)
    client = mlflow.MlflowClient(uri)
    experiment = client.get_run(search_id).info.experiment_id
    folds = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{search_id}'")
    return wall, sum(f.data.metrics.get("trial_mirror_seconds", 0.0) for f in folds)


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
    parser.add_argument("--repeats", type=int, default=2,
                        help="quick searches per store (ABBA order)")
    parser.add_argument("--config", default="experiments/microcal_quick.yaml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        data, port = folder / "team", free_port()
        server, _ = start(data, "127.0.0.1", port, auth=False)
        stores = {"SQLite file": f"sqlite:///{folder / 'mlflow.db'}",
                  "PostgreSQL + mlflow server (HTTP)": server}
        try:
            searches = {name: [] for name in stores}
            for i, name in enumerate(abba(list(stores), args.repeats)):
                searches[name].append(quick_search(stores[name], args.config, folder / f"ray-{i}"))
                print(f"{name}: search {searches[name][-1][0]:.1f} s", flush=True)
            rows = {}
            for name, uri in stores.items():
                filled, experiment = fill(uri, args.runs)
                rows[name] = (filled, query_ms(uri, experiment))
                print(f"{name}: {args.runs} runs in {filled:.0f} s", flush=True)
        finally:
            stop(data)
    experiment = load_experiment(ROOT / args.config)
    trials = experiment.cross_validation.n_folds * experiment.search.trials_per_fold
    print_table(searches, rows, trials, args.runs)


def abba(names: list[str], repeats: int) -> list[str]:
    """Returns the order of the searches: A B, B A, A B, ... (`repeats` pairs)."""
    return [n for i in range(repeats) for n in (names if i % 2 == 0 else names[::-1])]


def print_table(searches: dict, rows: dict, trials: int, runs: int) -> None:
    base = statistics.median(wall for wall, _ in searches["SQLite file"])
    print(f"\n| store | quick search wall, median (s) | all runs (s) | vs SQLite | trial "
          f"mirror writes per trial (ms, {trials} trials) | creating {runs} runs (s) | "
          "search_runs, filtered + ordered, 100 of them (ms, median of 20) |")
    print("|---|---|---|---|---|---|---|")
    for name, (filled, query) in rows.items():
        walls = [wall for wall, _ in searches[name]]
        wall = statistics.median(walls)
        mirror = statistics.median(m for _, m in searches[name]) / trials * 1000
        print(f"| {name} | {wall:.1f} | {', '.join(f'{w:.1f}' for w in walls)} | "
              f"{100 * (wall / base - 1):+.1f} % | {mirror:.0f} | {filled:.0f} | {query:.1f} |")


if __name__ == "__main__":
    main()
