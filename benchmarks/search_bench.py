"""Wall time and cross-validated AUC of a full search, with the baselines on the same folds.

    python benchmarks/search_bench.py --config experiments/microcal.yaml --group-by case
    python benchmarks/search_bench.py --config experiments/microcal.yaml --group-by none

Runs the real `tune` entry point in a subprocess against its own SQLite store
(benchmarks/results/search.db), then prints the parent run's figures as markdown rows:
CV test AUC mean ± std and per fold, the two brightness baselines on the same folds, the
CNN's margin over the logistic regression, and the wall time.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "benchmarks" / "results" / "search.db"


def run_search(config: str, group_by: str) -> tuple[str, float]:
    """Runs one search; returns (parent run id, wall seconds)."""
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{STORE}", PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_RUN_ID", None)
    start = time.monotonic()
    process = subprocess.run([sys.executable, "-m", "tune.search", "--config", config,
                              "--group-by", group_by,
                              "--storage", str(STORE.parent / "ray_results")],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    seconds = time.monotonic() - start
    lines = process.stdout.splitlines()
    print("\n".join(line for line in lines if line.startswith(("fold", "search", "ray"))))
    if process.returncode != 0:
        raise SystemExit(f"search failed with exit code {process.returncode}")
    parent = next(line.split()[1] for line in lines if line.startswith("search "))
    return parent, seconds


def table_row(parent: str, group_by: str, seconds: float) -> str:
    client = mlflow.MlflowClient(f"sqlite:///{STORE}")
    m = client.get_run(parent).data.metrics
    folds = client.search_runs([client.get_run(parent).info.experiment_id],
                               f"tags.mlflow.parentRunId = '{parent}' and tags.mammo.kind = 'fold'",
                               order_by=["tags.`mammo.fold` ASC"])
    per_fold = ", ".join(f"{f.data.metrics['test_auc']:.3f}" for f in
                         sorted(folds, key=lambda f: int(f.data.tags["mammo.fold"])))

    def ms(name: str) -> str:
        return f"{m[f'cv_{name}_mean']:.3f} ± {m[f'cv_{name}_std']:.3f}"

    return (f"| {group_by} | {ms('test_auc')} | {per_fold} | {ms('baseline_logreg_test_auc')} | "
            f"{ms('baseline_max_pixel_test_auc')} | {ms('test_auc_margin_over_logreg')} | "
            f"{ms('test_sensitivity')} | {ms('test_specificity')} | {seconds / 60:.1f} min | "
            f"`{parent}` |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/microcal.yaml")
    parser.add_argument("--group-by", default="case", choices=["case", "roi", "none"])
    args = parser.parse_args()
    STORE.parent.mkdir(parents=True, exist_ok=True)
    parent, seconds = run_search(args.config, args.group_by)
    print("\n| grouping | CNN CV test AUC | per fold | logistic regression | max pixel "
          "| CNN − logreg | sensitivity | specificity | wall time | parent run |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(table_row(parent, args.group_by, seconds))


if __name__ == "__main__":
    main()
