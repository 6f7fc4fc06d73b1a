"""Ensemble quality on the hold-out: learned weights vs plain average vs best single expert.

    python benchmarks/registry_bench.py                      # latest default search
    python benchmarks/registry_bench.py --search-run <id>

Runs the real `register` entry point on a finished search in the benchmark store
(benchmarks/results/search.db, written by search_bench.py), then prints the cross-fitted
hold-out metrics of the three methods as markdown, plus a group bootstrap (resampling
whole cases) of the AUC differences, because ~170 hold-out images are few.
"""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "benchmarks" / "results" / "search.db"
METHODS = ("average", "learned", "best_single")
METRICS = ("auc", "accuracy", "sensitivity", "specificity", "f1", "f2")


def register(config: str, search_run: str) -> str:
    """Runs the register entry point; returns the register run id."""
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{STORE}", PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_RUN_ID", None)
    out = subprocess.run([sys.executable, "-m", "tune.register", "--config", config,
                          "--search-run", search_run], cwd=ROOT, env=env, text=True,
                         stdout=subprocess.PIPE)
    print("\n".join(line for line in out.stdout.splitlines()
                    if line.startswith(("hold-out", "registered"))))
    if out.returncode != 0:
        raise SystemExit(f"register failed with exit code {out.returncode}")
    client = mlflow.MlflowClient(f"sqlite:///{STORE}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "tags.mammo.kind = 'register'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id


def bootstrap(table: pd.DataFrame, a: str, b: str, rounds: int = 2000,
              seed: int = 0) -> tuple[float, float, float]:
    """Returns (AUC(a) - AUC(b), 2.5 %, 97.5 % quantiles) resampling whole groups."""
    rng = np.random.default_rng(seed)
    groups = table["group"].unique()
    members = {g: np.flatnonzero(table["group"].to_numpy() == g) for g in groups}
    y = table["label"].to_numpy()
    diffs = []
    for _ in range(rounds):
        index = np.concatenate([members[g] for g in rng.choice(groups, len(groups))])
        if len(np.unique(y[index])) < 2:
            continue
        diffs.append(roc_auc_score(y[index], table[a].to_numpy()[index])
                     - roc_auc_score(y[index], table[b].to_numpy()[index]))
    point = roc_auc_score(y, table[a]) - roc_auc_score(y, table[b])
    low, high = np.quantile(diffs, [0.025, 0.975])
    return point, float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/microcal.yaml")
    parser.add_argument("--search-run", default="", help="default: latest finished search")
    args = parser.parse_args()
    run_id = register(args.config, args.search_run)
    client = mlflow.MlflowClient(f"sqlite:///{STORE}")
    m = client.get_run(run_id).data.metrics
    print(f"\nregister run `{run_id}`\n")
    print("| method (cross-fitted) | " + " | ".join(METRICS) + " |")
    print("|---" * (len(METRICS) + 1) + "|")
    for method in METHODS:
        print(f"| {method} | " + " | ".join(f"{m[f'holdout_{method}_{k}']:.3f}" for k in METRICS)
              + " |")
    local = client.download_artifacts(run_id, "holdout/cross_fitted.csv", str(STORE.parent))
    table = pd.read_csv(io.StringIO(Path(local).read_text()))
    print(f"\n{len(table)} hold-out images in {table['group'].nunique()} groups; "
          "group bootstrap, 2,000 rounds:")
    for a, b in (("learned", "average"), ("learned", "best_single")):
        point, low, high = bootstrap(table, a, b)
        print(f"- AUC {a} − {b}: {point:+.4f} (95 % interval {low:+.4f} … {high:+.4f})")


if __name__ == "__main__":
    main()
