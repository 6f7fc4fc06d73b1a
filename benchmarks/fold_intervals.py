"""How precisely one outer fold's test AUC is known: a case-level bootstrap per fold.

    python benchmarks/fold_intervals.py --config experiments/microcal.yaml \
        --search-runs ca2c39ee... 838b3040...

Reads each search's fold runs from the store (default benchmarks/results/search.db, where
benchmarks/search_bench.py writes), takes every fold's out-of-fold test predictions
(`predictions/test.csv`) and resamples whole cases, since patches of one case are not
independent. Prints per fold: images, cases, test AUC, its 95 % interval and how often a
resample falls below `--floor` (the "no fold below 0.96" of the search-speed issue).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import mlflow
import numpy as np
from sklearn.metrics import roc_auc_score

from tune.fold import predictions_of
from tune.project import load_config, load_data

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "benchmarks" / "results" / "search.db"


def case_bootstrap(labels: np.ndarray, scores: np.ndarray, cases: np.ndarray, rounds: int,
                   seed: int = 0) -> np.ndarray:
    """Returns the AUCs of `rounds` resamples of whole cases (resamples with one class skipped)."""
    rng = np.random.default_rng(seed)
    members = {case: np.flatnonzero(cases == case) for case in np.unique(cases)}
    names, aucs = list(members), []
    for _ in range(rounds):
        draw = rng.integers(len(names), size=len(names))
        picked = np.concatenate([members[names[i]] for i in draw])
        if len(np.unique(labels[picked])) == 2:
            aucs.append(roc_auc_score(labels[picked], scores[picked]))
    return np.asarray(aucs)


def fold_runs(client: mlflow.MlflowClient, search_run: str) -> list:
    experiment = client.get_run(search_run).info.experiment_id
    runs = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{search_run}' "
                                            "and tags.mammo.kind = 'fold'")
    return sorted(runs, key=lambda run: int(run.data.tags["mammo.fold"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/microcal.yaml")
    parser.add_argument("--search-runs", nargs="+", required=True)
    parser.add_argument("--store", default=str(STORE))
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--floor", type=float, default=0.96)
    args = parser.parse_args()
    mlflow.set_tracking_uri(f"sqlite:///{Path(args.store).resolve()}")
    experiment, _ = load_config(args.config)
    dataset, _ = load_data(experiment, "")
    cases = np.asarray(dataset.cases)
    print(f"| search | fold | images | cases | test AUC | 95 % interval (cases resampled) "
          f"| resamples below {args.floor} |\n|---|---:|---:|---:|---:|---|---:|")
    client = mlflow.MlflowClient()
    for search_run in args.search_runs:
        for run in fold_runs(client, search_run):
            index, scores = predictions_of(run.info.run_id)
            labels = dataset.labels[index]
            aucs = case_bootstrap(labels, scores, cases[index], args.rounds)
            low, high = np.percentile(aucs, [2.5, 97.5])
            print(f"| `{search_run[:8]}…` | {run.data.tags['mammo.fold']} | {len(index)} "
                  f"| {len(np.unique(cases[index]))} | {roc_auc_score(labels, scores):.3f} "
                  f"| [{low:.3f}, {high:.3f}] | {np.mean(aucs < args.floor):.0%} |")


if __name__ == "__main__":
    main()
