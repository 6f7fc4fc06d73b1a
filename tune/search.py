"""`tune` entry point: a Ray Tune search per outer fold, every fold and trial in MLflow.

    python -m tune.search --config experiments/microcal_quick.yaml
    python -m tune.search --resume true                      # continue a killed search
    python -m tune.search --reuse-configs-from <parent run>  # retrain the best configs only
    RAY_ADDRESS=<head>:6379 python -m tune.search           # on a Ray cluster

Run tree: search (parent) -> fold k (child) -> trials (grandchildren). The parent logs
the fold plan, mean +/- std of every test metric next to the baselines, the ROC of all
folds and the grid of confusion matrices.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import ray

from mammo_core import metrics
from mammo_core.config import Experiment
from mammo_core.exploration import plan_parts
from mammo_core.dataset import Dataset
from mammo_core.families import family_of
from mammo_core.errors import DataError
from mammo_core.folds import FoldPlan, check_plan, leak_line, make_fold_plan, published_leaks
from mammo_core.preprocessing import preprocess
from mammo_core.tracking import log_experiment_config, log_figure, tracked_run, use_tracking_store
from tune.cluster import start_ray
from tune.families import log_family_comparison, markdown
from tune.fold import SCORE_COLUMNS, FoldOutcome, config_text, load_outcome, run_fold
from tune.project import (PLAN_ARTIFACT, PROJECT_ROOT, UsageError, base_parser,
                          finished_fold_runs, load_config, load_data, load_fold_plan, log_data,
                          log_data_parts, log_exploration, run_entry)
from tune.time_to_quality import FIGURE as TTQ_FIGURE, log_time_to_quality

CONFIGS_ARTIFACT = "search/best_configs.json"


def parse_args(argv: list[str] | None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--resume", default="false", choices=["true", "false"],
                        help="continue the latest unfinished search with the same config")
    parser.add_argument("--reuse-configs-from", default="",
                        help="parent run id: retrain each fold's best config, no search")
    parser.add_argument("--group-by", default="", choices=["", "case", "roi", "none"],
                        help="override split.group_by (none = image-level, for comparison)")
    parser.add_argument("--storage", default=os.environ.get("MAMMO_RAY_STORAGE",
                                                            str(PROJECT_ROOT / "ray_results")),
                        help="Ray Tune experiment folder, kept to resume "
                             "(default: MAMMO_RAY_STORAGE, else ray_results/)")
    return parser.parse_args(argv)


RESUME_HINT = "; continue with --resume true (mlflow run: -P resume=true)"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        _, parent_id, summary_line = run_search(args)
        print(f"search {parent_id} FINISHED: {summary_line}")

    return run_entry(body, RESUME_HINT)


def run_search(args, child_of: str | None = None) -> tuple[Experiment, str, str]:
    """Runs (or resumes, or reuses) a search; returns (experiment, search run id, summary).

    The search run is a child of `child_of` if given; otherwise, under `mlflow run`, the
    project's run (MLFLOW_RUN_ID) is the search run.
    """
    project_run = None if child_of else os.environ.get("MLFLOW_RUN_ID")
    experiment, config_path = load_config(args.config)
    if args.group_by:
        experiment = experiment.replace(split=experiment.split.replace(group_by=args.group_by))
    print(f"tracking: {use_tracking_store(PROJECT_ROOT)}")
    dataset, summary = load_data(experiment, args.data_dir)
    parent_id = resumable_search(experiment, dataset) if args.resume == "true" else None
    plan = None  # a resumed search reads the plan it logged
    if not parent_id:  # a data-size problem stops the search before any run or training
        plan = make_fold_plan(dataset, experiment.split, experiment.cross_validation)
        check_plan(plan, dataset.labels, experiment.registry.cross_fit_folds,
                   experiment.split.seed)
        if args.reuse_configs_from:
            check_reused_plan(args.reuse_configs_from, dataset, plan)
    if parent_id and (child_of or project_run):
        mlflow.MlflowClient().set_tag(child_of or project_run, "mammo.resumed_search", parent_id)
    try:
        print(start_ray())
        with tracked_run(experiment.tracking.experiment_name, f"search-{experiment.name}",
                         tags=search_tags(experiment, dataset),
                         run_id=parent_id or project_run, parent_run_id=child_of,
                         system_metrics=True) as parent:
            fixed = best_configs(args.reuse_configs_from) if args.reuse_configs_from else None
            summary_line = search(experiment, config_path, dataset, summary, parent.info.run_id,
                                  Path(args.storage), fixed, plan)
    finally:
        ray.shutdown()
    return experiment, parent.info.run_id, summary_line


def search(experiment: Experiment, config_path: Path, dataset: Dataset, summary: dict,
           parent_id: str, storage: Path, fixed: dict[int, dict] | None,
           plan: FoldPlan | None) -> str:
    """Runs every fold of the checked `plan` in the active parent run, or resumes the
    search the parent run is (plan None: the one it logged); returns a one-line summary."""
    resumed = plan is None
    if resumed:
        plan = load_fold_plan(parent_id, dataset)
    else:
        log_experiment_config(experiment, config_path)
        log_data(dataset, summary)
        mlflow.log_text(plan.to_json(dataset.paths), PLAN_ARTIFACT)
        mlflow.log_params({"fold_plan.holdout_images": len(plan.holdout),
                           "mode": "reuse" if fixed else "search"})
        if plan.protocol == "published":
            leaks = published_leaks(dataset, plan)
            mlflow.log_metrics(leaks)
            print(leak_line(leaks))
    images = preprocess(dataset.images, experiment.preprocessing)
    if not resumed:
        log_exploration(dataset, images, plan_parts(plan), experiment.data.class_names)
        log_data_parts(dataset, {"all": None, "holdout": plan.holdout})
    outcomes, started = [], time.monotonic()
    durations: list[float] = []  # every finished trial's seconds: the status line's ETA
    for fold in plan.folds:
        outcome = load_outcome(parent_id, fold.index) if resumed else None
        if outcome is None:
            outcome = run_fold(experiment, dataset, images, fold, parent_id,
                               storage / parent_id, (fixed or {}).get(fold.index), resumed,
                               durations)
        else:
            print(f"fold {fold.index + 1}/{len(plan.folds)}: already finished, reused")
        outcomes.append(outcome)
    summary = log_cv_summary(experiment, dataset, outcomes, time.monotonic() - started)
    log_time_to_quality(parent_id, len(plan.folds))
    if "family" in experiment.search_space:
        fold_runs = {k: r.info.run_id for k, r in
                     finished_fold_runs(parent_id, len(plan.folds)).items()}
        table = log_family_comparison(fold_runs, {o.fold: family_of(o.best_config, experiment
                                                                    .model) for o in outcomes})
        print("families (best inner-validation AUC per fold):\n" + markdown(table))
    return summary


def log_cv_summary(experiment: Experiment, dataset: Dataset, outcomes: list[FoldOutcome],
                   seconds: float) -> str:
    """Logs cv_*_mean/std, cv figures, best configs and best-trial tags; returns a summary."""
    aggregate = metrics.mean_std([o.scores for o in outcomes])
    mlflow.log_metrics({f"cv_{k}": v for k, v in aggregate.items()})
    mlflow.log_metric("search_wall_seconds", seconds)
    curves = [(dataset.labels[o.test_index], o.probabilities) for o in outcomes]
    names = experiment.data.label_names
    if outcomes[0].probabilities.ndim == 2:  # several classes: pooled out-of-fold, per class
        log_figure(metrics.per_class_roc_figure(
            np.concatenate([c[0] for c in curves]), np.concatenate([c[1] for c in curves]),
            names, "ROC per class, outer test folds pooled"), "figures/cv_roc.png")
    else:
        log_figure(metrics.cv_roc_figure(curves), "figures/cv_roc.png")
    matrices = [metrics.confusion(labels, probs, experiment.training.threshold)
                for labels, probs in curves]
    log_figure(metrics.confusion_grid_figure(matrices, names), "figures/cv_confusion.png")
    mlflow.log_dict({o.fold: o.best_config for o in outcomes}, CONFIGS_ARTIFACT)
    mlflow.set_tags({f"mammo.best_trial.fold{o.fold}": o.best_trial_run for o in outcomes})
    mlflow.set_tag("mlflow.note.content", search_description(outcomes, aggregate, seconds,
                                                             experiment.split.protocol))
    max_pixel = aggregate.get("baseline_max_pixel_test_auc_mean")
    return (f"CV test AUC {aggregate['test_auc_mean']:.3f} ± {aggregate['test_auc_std']:.3f} "
            f"(logistic regression {aggregate['baseline_logreg_test_auc_mean']:.3f}"
            + (f", max pixel {max_pixel:.3f}" if max_pixel is not None else "")
            + "); per fold " + ", ".join(f"{o.scores['test_auc']:.3f}" for o in outcomes))


PROTOCOL_TEXT = {
    "grouped": "Protocol `grouped`: each fold's test part is its own grouped share of the "
               "data, seen by no other fold's training.",
    "published": "Protocol `published`: every fold's expert is scored on the collection's "
                 "own test partition, as its publication scored (metrics "
                 "`published_test_images_sharing_*` count what that partition shares with "
                 "the training side).",
}


def search_description(outcomes: list[FoldOutcome], aggregate: dict[str, float],
                       seconds: float, protocol: str = "grouped") -> str:
    """Returns the search run's description (Markdown, shown in the MLflow UI): the
    protocol, test AUC per outer fold next to the baselines, the best configs, where the
    figures are."""
    columns = [(name, key) for name, key in SCORE_COLUMNS if key in outcomes[0].scores]
    lines = ["| outer fold | " + " | ".join(name for name, _ in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {o.fold} | " + " | ".join(f"{o.scores[key]:.3f}" for _, key in columns)
              + " |" for o in outcomes]
    lines.append("| **mean ± std** | " + " | ".join(
        f"**{aggregate[key + '_mean']:.3f} ± {aggregate[key + '_std']:.3f}**"
        for _, key in columns) + " |")
    configs = [f"- fold {o.fold}: {config_text(o.best_config)}" for o in outcomes]
    scored = (PROTOCOL_TEXT[protocol] + " ") if protocol in PROTOCOL_TEXT else ""
    return ("**Cross-validated search**: test AUC of each outer fold's expert (chosen on "
            f"its inner validation part) and of two baselines on the same images; "
            f"{seconds / 60:.1f} min. {scored}\n\n" + "\n".join(lines)
            + "\n\n**Best configs**\n\n" + "\n".join(configs)
            + "\n\n**Figures** (Artifacts): `figures/cv_roc.png`, `figures/cv_confusion.png`, "
              f"`{TTQ_FIGURE}` (best validation AUC so far against wall time), "
              "the data's first look in `figures/data_*.png`; each fold is a child run with "
              "its trials as children.")


def search_tags(experiment: Experiment, dataset: Dataset) -> dict[str, str]:
    return {"mammo.entry_point": "tune", "mammo.kind": "search",
            "mammo.config_hash": experiment.fingerprint(),
            "mammo.data_fingerprint": dataset.fingerprint()}


def resumable_search(experiment: Experiment, dataset: Dataset) -> str | None:
    """Returns the latest unfinished search with this config and data, or None."""
    client = mlflow.MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    tags = search_tags(experiment, dataset)
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client.search_runs(experiments, f"{query} and attributes.status != 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        print("resume: no unfinished search with this config and data; starting a new one")
        return None
    print(f"resume: continuing search {runs[0].info.run_id}")
    return runs[0].info.run_id


def check_reused_plan(search_run: str, dataset: Dataset, plan: FoldPlan) -> None:
    """Raises UsageError unless `search_run` split these very data (fingerprint) into the
    same parts: its fold k's best config is only fold k's best on fold k's images."""
    try:
        theirs = load_fold_plan(search_run, dataset)
    except DataError as err:
        raise UsageError(f"--reuse-configs-from {search_run}: {err}") from err
    if not theirs.same_parts(plan):
        raise UsageError(f"--reuse-configs-from {search_run}: that search split the data into "
                         "other folds (another seed, group_by, fold count or fraction); its "
                         "best configs would be scored on images they were chosen on")


def best_configs(parent_run_id: str) -> dict[int, dict]:
    """Returns {fold: best config} logged by an earlier search."""
    raw = json.loads(mlflow.artifacts.load_text(f"runs:/{parent_run_id}/{CONFIGS_ARTIFACT}"))
    return {int(k): {n: v for n, v in cfg.items() if n != "seed"} for k, cfg in raw.items()}


if __name__ == "__main__":
    sys.exit(main())
