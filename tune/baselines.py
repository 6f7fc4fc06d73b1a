"""`baselines` entry point: wavelet-coefficient features and classic classifiers, on the
same outer folds as the CNN search, compared with it in one MLflow run.

    python -m tune.baselines --config experiments/wavelet_baselines_quick.yaml
    python -m tune.baselines --search-run <id>     # that search's folds and CNN figures
    mlflow run . --env-manager local -e baselines -P search_run=<id>

Fold plan: the given search's, else the latest finished search's in the tracking
experiment, else (`--search-run none`, or no search yet) the plan the config describes.
Every (classifier, fold) pair is one Ray task. Run tree: baselines (parent) -> one run
per classifier, with the same metric names as the CNN search (cv_test_auc_mean, ...).
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import time

import mlflow
import numpy as np
import ray

from mammo_core import metrics
from mammo_core.classifiers import FoldFit, fit_fold
from mammo_core.config import BaselinesExperiment, load_baselines
from mammo_core.dataset import Dataset
from mammo_core.folds import Fold, make_fold_plan
from mammo_core.tracking import log_experiment_config, log_figure, tracked_run, use_tracking_store
from mammo_core.wavelet import wavelet_features
from tune.cluster import start_ray
from tune.evaluation import predictions_csv
from tune.progress import clock
from tune.project import (PLAN_ARTIFACT, PROJECT_ROOT, UsageError, base_parser,
                          finished_fold_runs, latest_search, load_config, load_data,
                          load_fold_plan, log_data, run_entry)

DEFAULT_CONFIG = "experiments/wavelet_baselines.yaml"
CNN = "CNN (search)"


def parse_args(argv: list[str] | None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.set_defaults(config=DEFAULT_CONFIG)
    parser.add_argument("--search-run", default="",
                        help="CNN search whose fold plan to use; '' = the latest finished "
                             "search, 'none' = the config's own plan, no CNN row")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        run_id, table = run_baselines(args.config, args.data_dir, args.search_run)
        print(table)
        print(f"baselines {run_id} FINISHED")

    return run_entry(body)


def run_baselines(config: str, data_dir: str = "", search_run: str = "") -> tuple[str, str]:
    """Fits every classifier on every fold and logs the comparison; returns (run id, table).

    Under `mlflow run` the project's run is the parent; otherwise a new run is.
    """
    project_run = os.environ.get("MLFLOW_RUN_ID")
    experiment, config_path = load_config(config, load_baselines)
    print(f"tracking: {use_tracking_store(PROJECT_ROOT)}")
    dataset, summary = load_data(experiment, data_dir)
    search_run = choose_search(experiment, search_run)
    plan = (load_fold_plan(search_run, dataset) if search_run else
            make_fold_plan(dataset, experiment.split, experiment.cross_validation))
    features = wavelet_features(dataset.images, experiment.features)
    print(f"features: {features.shape[1]} wavelet coefficients per image "
          f"({experiment.features.family}, level {experiment.features.level}, "
          f"details {list(experiment.features.keep_levels)})")
    tags = {"mammo.entry_point": "baselines", "mammo.kind": "baselines",
            "mammo.search_run": search_run or "none",
            "mammo.data_fingerprint": dataset.fingerprint()}
    with tracked_run(experiment.tracking.experiment_name, f"baselines-{experiment.name}",
                     tags=tags, run_id=project_run) as parent:
        log_experiment_config(experiment, config_path)
        log_data(dataset, summary)
        mlflow.log_text(plan.to_json(dataset.paths), PLAN_ARTIFACT)
        mlflow.log_params({"fold_plan.source": f"search {search_run}" if search_run else "config",
                           "features.count": features.shape[1]})
        fits = run_fits(experiment, features, dataset.labels, plan.folds)
        per_fold = {name: log_classifier(experiment, name, fits[name], dataset,
                                         parent.info.run_id) for name in experiment.classifiers}
        if search_run:
            best = max(np.mean(aucs) for aucs in per_fold.values())
            per_fold.update(search_rows(search_run, len(plan.folds)))
            mlflow.log_metric("cnn_auc_margin_over_best_classic", np.mean(per_fold[CNN]) - best)
        return parent.info.run_id, log_comparison(per_fold)


def choose_search(experiment: BaselinesExperiment, requested: str) -> str:
    """Returns the search run whose fold plan to use, or '' for the config's own plan."""
    if requested == "none":
        return ""
    if requested:
        return requested
    try:
        found = latest_search(experiment.tracking.experiment_name)
    except UsageError:
        print(f"no finished search in '{experiment.tracking.experiment_name}': using the "
              "config's fold plan; the comparison has no CNN row")
        return ""
    print(f"fold plan and CNN figures: search {found}")
    return found


@ray.remote(num_cpus=1)
def _fit_task(name, grid, features, labels, fold, standardize, seed) -> FoldFit:
    return fit_fold(name, grid, features, labels, (fold.train, fold.val, fold.test), fold.index,
                    standardize, seed)[0]


def run_fits(experiment: BaselinesExperiment, features: np.ndarray, labels: np.ndarray,
             folds: tuple[Fold, ...]) -> dict[str, list[FoldFit]]:
    """Runs every (classifier, fold) as a Ray task; returns {classifier: fits by fold}.

    At most `search.max_concurrent` tasks run at once. Prints a status line with an ETA.
    """
    try:
        print(start_ray())
        shared = ray.put(features), ray.put(labels)
        queue = [(name, fold) for name in experiment.classifiers for fold in folds]
        total, running, done = len(queue), {}, []
        started = last = time.monotonic()
        while queue or running:
            while queue and len(running) < experiment.search.max_concurrent:
                name, fold = queue.pop(0)
                running[_fit_task.remote(name, experiment.classifiers[name], *shared, fold,
                                         experiment.features.standardize,
                                         experiment.search.seed)] = name
            ready, _ = ray.wait(list(running), num_returns=1)
            running.pop(ready[0])
            done.append(ray.get(ready[0]))  # a failing fit ends the run with its error
            if time.monotonic() - last > 10 or not (queue or running):
                last = time.monotonic()
                eta = remaining_seconds(done, [n for n, _ in queue] + list(running.values()),
                                        experiment.search.max_concurrent)
                status_line(done, total, len(running), last - started, eta)
    finally:
        ray.shutdown()
    return {name: sorted((f for f in done if f.classifier == name), key=lambda f: f.fold)
            for name in experiment.classifiers}


def remaining_seconds(done: list[FoldFit], pending: list[str], workers: int) -> float:
    """Returns the estimated seconds left: each pending fit costs what its classifier's
    finished fits cost on average (classifiers differ 100-fold), else the overall mean."""
    overall = np.mean([f.seconds for f in done])
    cost = {name: np.mean([f.seconds for f in done if f.classifier == name])
            for name in {f.classifier for f in done}}
    return sum(cost.get(name, overall) for name in pending) / workers


def status_line(done: list[FoldFit], total: int, running: int, elapsed: float,
                eta: float) -> None:
    """Prints `baselines | fits 12/45 done, 1 running | last: knn fold 3 (0.2 s) | 1m10s, ETA 3m20s`."""
    last = done[-1]
    print(f"baselines | fits {len(done)}/{total} done, {running} running | last: "
          f"{last.classifier} fold {last.fold + 1} ({last.seconds:.1f} s) | "
          f"{clock(elapsed)}, ETA {clock(eta)}", flush=True)


def log_classifier(experiment: BaselinesExperiment, name: str, fits: list[FoldFit],
                   dataset: Dataset, parent_id: str) -> list[float]:
    """Logs one classifier's child run; returns its test AUC per fold.

    Logs params (classifier, grid, chosen params per fold), metrics fold<k>_test_<m>
    and cv_test_<m>_mean/_std, figures/cv_roc.png, search/candidates.csv and
    predictions/test.csv.
    """
    scores = [{f"test_{k}": v for k, v in metrics.binary_metrics(
        dataset.labels[f.test_index], f.probabilities, experiment.threshold).items()}
        for f in fits]
    with tracked_run(experiment.tracking.experiment_name, name, parent_run_id=parent_id,
                     tags={"mammo.kind": "baseline", "mammo.classifier": name}):
        mlflow.log_params({"classifier": name, "grid": json.dumps(experiment.classifiers[name]),
                           **{f"features.{k}": v for k, v in
                              experiment.to_dict()["features"].items()}})
        mlflow.log_params({f"fold{f.fold}.best": json.dumps(f.best_params) for f in fits})
        mlflow.log_metrics({f"fold{f.fold}_{k}": v for f, s in zip(fits, scores)
                            for k, v in s.items()})
        mlflow.log_metrics({f"cv_{k}": v for k, v in metrics.mean_std(scores).items()})
        mlflow.log_metric("fit_seconds", sum(f.seconds for f in fits))
        curves = [(dataset.labels[f.test_index], f.probabilities) for f in fits]
        log_figure(metrics.cv_roc_figure(curves, f"ROC per outer fold: {name}"),
                   "figures/cv_roc.png")
        mlflow.log_text(candidates_csv(fits), "search/candidates.csv")
        index = np.concatenate([f.test_index for f in fits])
        mlflow.log_text(predictions_csv(
            index, dataset.labels[index], np.concatenate([f.probabilities for f in fits]),
            folds=np.concatenate([np.full(len(f.test_index), f.fold) for f in fits])),
            "predictions/test.csv")
    return [s["test_auc"] for s in scores]


def candidates_csv(fits: list[FoldFit]) -> str:
    return _csv(["fold", "val_auc", "chosen", "params"],
                [[f.fold, f"{auc:.6f}", int(params == f.best_params), json.dumps(params)]
                 for f in fits for params, auc in f.tried])


def _csv(header: list[str], rows: list[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def search_rows(search_run: str, n_folds: int) -> dict[str, list[float]]:
    """Returns the CNN's and the brightness baselines' test AUC per fold, from the search."""
    by_fold = {k: run.data.metrics for k, run in finished_fold_runs(search_run, n_folds).items()}
    names = {CNN: "test_auc", "intensity logistic regression (search)": "baseline_logreg_test_auc",
             "max pixel (search)": "baseline_max_pixel_test_auc"}
    return {label: [by_fold[k][key] for k in range(n_folds)] for label, key in names.items()}


def log_comparison(per_fold: dict[str, list[float]]) -> str:
    """Logs comparison.csv, comparison.md, figures/ranking.png and <model>_cv_test_auc_*.

    Returns the markdown table, best model first.
    """
    ranked = sorted(per_fold, key=lambda name: -np.mean(per_fold[name]))
    n_folds = len(per_fold[ranked[0]])
    header = ["rank", "model", "CV test AUC"] + [f"fold {k + 1}" for k in range(n_folds)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    rows = []
    for rank, name in enumerate(ranked, 1):
        values = np.asarray(per_fold[name])
        mean, std = values.mean(), values.std(ddof=1)
        lines.append(f"| {rank} | {name} | {mean:.3f} ± {std:.3f} | "
                     + " | ".join(f"{v:.3f}" for v in values) + " |")
        rows.append([name, f"{mean:.6f}", f"{std:.6f}"] + [f"{v:.6f}" for v in values])
        key = "".join(c if c.isalnum() else "_" for c in name.split(" (")[0]).strip("_")
        mlflow.log_metrics({f"{key}_cv_test_auc_mean": mean, f"{key}_cv_test_auc_std": std})
    mlflow.log_text(_csv(["model", "auc_mean", "auc_std"] + [f"fold{k}" for k in range(n_folds)],
                         rows), "comparison.csv")
    mlflow.log_text("\n".join(lines) + "\n", "comparison.md")
    log_figure(metrics.ranking_figure(per_fold, highlight=[CNN]), "figures/ranking.png")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
