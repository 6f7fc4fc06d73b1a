"""One outer fold: its Ray Tune search, its expert, and the expert's test evaluation."""
from __future__ import annotations

import json
import shutil
import signal
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import mlflow
import numpy as np
from ray import tune

from mammo_core import metrics
from mammo_core.config import Experiment
from mammo_core.dataset import Dataset
from mammo_core.folds import Fold
from mammo_core.families import build_model, count_params, family_of, recipe_for
from mammo_core.tracking import log_figure, log_keras_model, tracked_run
from tune.evaluation import evaluate_on_test
from tune.project import log_data_parts
from tune.progress import StatusLine
from tune.space import METRIC, MODE, make_scheduler, make_searcher, param_space
from tune.time_to_quality import TimeToQuality
from tune.trainable import WEIGHTS, train_trial
from tune.trial_runs import TrialRuns, close_open_trials, find_trial_run

CONFIG_ARTIFACT = "expert/config.json"


@dataclass(frozen=True)
class FoldOutcome:
    fold: int
    scores: dict[str, float]
    test_index: np.ndarray
    probabilities: np.ndarray
    best_config: dict
    best_trial_run: str


def run_fold(experiment: Experiment, dataset: Dataset, images: np.ndarray, fold: Fold,
             parent_id: str, storage: Path, fixed: dict | None, resume: bool,
             durations: list[float] | None = None) -> FoldOutcome:
    """Searches (or retrains `fixed`) on the fold, evaluates its expert once on the test part.

    durations: the seconds of the search's finished trials so far, for the status line's
    ETA; this fold's trials are appended.

    Logs, in a child run of `parent_id`: split sizes, the trial runs (via TrialRuns), the
    expert's config, test metrics and figures, its learning curves and the expert model.
    """
    existing = unfinished_fold_run(parent_id, fold.index) if resume else None
    with tracked_run(experiment.tracking.experiment_name, f"fold{fold.index}",
                     tags={"mammo.kind": "fold", "mammo.fold": str(fold.index)},
                     run_id=existing, parent_run_id=parent_id) as run:
        parts = {"train": fold.train, "val": fold.val, "test": fold.test}
        mlflow.log_params({f"fold.{k}_images": len(v) for k, v in parts.items()} | {"fold": fold.index})
        if existing is None:
            log_data_parts(dataset, parts)
        data = {"x_train": images[fold.train], "y_train": dataset.labels[fold.train],
                "x_val": images[fold.val], "y_val": dataset.labels[fold.val]}
        callbacks = [TrialRuns(mlflow.get_tracking_uri(), run.info.experiment_id,
                               run.info.run_id, fold.index, experiment.search.max_epochs),
                     StatusLine(fold.index, experiment.cross_validation.n_folds,
                                1 if fixed else experiment.search.trials_per_fold,
                                experiment.search.max_concurrent_trials, durations=durations),
                     TimeToQuality(mlflow.get_tracking_uri(), parent_id, fold.index)]
        try:
            grid = fit_fold(experiment, fold.index, data, storage, callbacks, fixed,
                            resume=existing is not None)
        finally:
            close_open_trials(mlflow.get_tracking_uri(), run.info.run_id)
        best = best_result(grid, fold.index)
        model = load_expert(best, experiment, images.shape[1:])
        best_run = find_trial_run(mlflow.MlflowClient(), run.info.experiment_id,
                                  run.info.run_id, best.metrics["trial_id"]) or ""
        mlflow.set_tag("mammo.best_trial_run", best_run)
        weights = count_params(model)
        mlflow.log_params({f"best.{k}": v for k, v in best.config.items()}
                          | {"family": family_of(best.config, experiment.model),
                             "expert_params": weights}
                          | recipe_for(best.config, experiment.model,
                                       experiment.training).params())
        mlflow.log_metric("expert_weights", weights)
        mlflow.log_dict(dict(best.config), CONFIG_ARTIFACT)
        log_best_curves(best)
        scores, probabilities = evaluate_on_test(model, experiment, dataset, images, parts)
        log_keras_model(model, images[fold.train[:4]], name="expert")
        mlflow.set_tag("mlflow.note.content", fold_description(fold.index, parts, best.config,
                                                               scores, best_run))
    return FoldOutcome(fold.index, scores, fold.test, probabilities, dict(best.config), best_run)


# What the run descriptions compare: the expert and the baselines on the same test images.
SCORE_COLUMNS = (("CNN expert", "test_auc"), ("max pixel", "baseline_max_pixel_test_auc"),
                 ("logistic regression", "baseline_logreg_test_auc"))


def config_text(config: dict) -> str:
    """Returns a best config as inline code for a description (without its seed)."""
    return "`" + json.dumps({k: v for k, v in config.items() if k != "seed"}) + "`"


def fold_description(index: int, parts: dict, config: dict, scores: dict[str, float],
                     best_run: str) -> str:
    """Returns the fold run's description (Markdown, shown in the MLflow UI)."""
    table = "\n".join(f"| {name} | {scores[key]:.3f} |" for name, key in SCORE_COLUMNS
                      if key in scores)
    sizes = ", ".join(f"{name} {len(index)}" for name, index in parts.items())
    return (f"**Outer fold {index}**: images {sizes}; the trials are this run's children, "
            f"the best is `{best_run}`.\n\n| model | test AUC |\n|---|---|\n{table}\n\n"
            f"Best config: {config_text(config)}. "
            "Figures: `figures/` (ROC, confusion matrix, learning curves of the best trial).")


def fit_fold(experiment: Experiment, fold_index: int, data: dict, storage: Path,
             callbacks: list, fixed: dict | None, resume: bool) -> tune.ResultGrid:
    """Runs the fold's Tuner (restored from `storage` when resuming); returns its results."""
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, data=data, experiment=experiment), {"cpu": 1})
    path = storage / f"fold{fold_index}"
    if resume and restorable(path, searched=not fixed):
        print(f"fold {fold_index + 1}: restoring unfinished trials from {path}")
        tuner = tune.Tuner.restore(str(path), trainable, resume_errored=True)
    else:
        if resume and path.exists():
            print(f"fold {fold_index + 1}: interrupted before its search saved any state: "
                  "starting it again")
            shutil.rmtree(path)
        tuner = make_tuner(experiment, fold_index, trainable, storage, callbacks, fixed)
    ctrl_c = signal.getsignal(signal.SIGINT)
    try:
        return tuner.fit()
    finally:
        # Tune leaves its graceful-stop handler installed, tied to this finished fit: a
        # Ctrl-C after it (evaluating the expert) would be swallowed.
        signal.signal(signal.SIGINT, ctrl_c)


def restorable(path: Path, searched: bool) -> bool:
    """Returns whether the fold's Tune experiment at `path` can be continued.

    Tune pickles the Tuner when the fold starts but saves the searcher's state only with
    its first experiment checkpoint: a fold interrupted in between restores a searcher
    without its space, and OptunaSearch then fails on its first suggestion. Such a fold
    has nothing worth keeping and is started again instead.
    """
    if not tune.Tuner.can_restore(str(path)):
        return False
    return not searched or any(path.glob("searcher-state-*.pkl"))


def make_tuner(experiment: Experiment, fold_index: int, trainable, storage: Path,
               callbacks: list, fixed: dict | None) -> tune.Tuner:
    """Returns the fold's Tuner: the search space (or the `fixed` config), Optuna, ASHA."""
    search = experiment.search
    return tune.Tuner(
        trainable, param_space=param_space(experiment, fixed),
        tune_config=tune.TuneConfig(
            search_alg=make_searcher(experiment, fold_index) if not fixed else None,
            scheduler=make_scheduler(experiment),
            # a grid multiplies Tune's samples by its size: trials_per_fold in all
            num_samples=1 if fixed else search.trials_per_fold // experiment.grid_size(),
            max_concurrent_trials=search.max_concurrent_trials,
            reuse_actors=search.reuse_actors),
        run_config=tune.RunConfig(
            name=f"fold{fold_index}", storage_path=str(storage), verbose=0,
            failure_config=tune.FailureConfig(max_failures=search.max_failures),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=METRIC, checkpoint_score_order=MODE),
            callbacks=callbacks))


def best_result(grid: tune.ResultGrid, fold_index: int) -> tune.Result:
    """Returns the trial with the best validation AUC at any epoch.

    Raises KeyboardInterrupt if Tune stopped early (its own Ctrl-C handling returns
    normally with unfinished trials) and RuntimeError if every trial failed.
    """
    if grid.num_terminated + grid.num_errors < len(grid):
        raise KeyboardInterrupt(f"fold {fold_index}: search interrupted")
    try:
        return grid.get_best_result(METRIC, MODE, scope="all")
    except RuntimeError as err:
        errors = [str(e).splitlines()[0] for e in grid.errors][:3]
        raise RuntimeError(f"fold {fold_index}: no trial produced a result ({errors})") from err


def load_expert(result: tune.Result, experiment: Experiment, input_shape: tuple) -> keras.Model:
    """Returns the best trial's model with its best-epoch weights."""
    checkpoint = result.get_best_checkpoint(METRIC, MODE)
    model = build_model(result.config, input_shape, experiment.model,
                        seed=int(result.config["seed"]), n_classes=experiment.data.n_classes)
    with checkpoint.as_directory() as folder, warnings.catch_warnings():
        # The file also holds the trial's optimizer slots; an expert only predicts.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(Path(folder) / WEIGHTS)
    return model


def log_best_curves(result: tune.Result) -> None:
    """Logs the best trial's per-epoch curves as figures/learning_curves.png."""
    frame = result.metrics_dataframe
    history = {k: frame[k].tolist() for k in ("loss", "auc", "val_loss", "val_auc") if k in frame}
    log_figure(metrics.learning_curves_figure(history), "figures/learning_curves.png")


def unfinished_fold_run(parent_id: str, fold: int) -> str | None:
    """Returns the fold's interrupted run (to continue in), after closing its stale trials."""
    runs = _fold_runs(parent_id, fold, "attributes.status != 'FINISHED'")
    if not runs:
        return None
    # A driver killed with SIGKILL could close nothing: its trials are still RUNNING.
    close_open_trials(mlflow.get_tracking_uri(), runs[0].info.run_id)
    return runs[0].info.run_id


def load_outcome(parent_id: str, fold: int) -> FoldOutcome | None:
    """Returns the outcome of a FINISHED fold run of `parent_id` (for resume), else None."""
    runs = _fold_runs(parent_id, fold, "attributes.status = 'FINISHED'")
    if not runs:
        return None
    run = runs[0]
    index, probabilities = predictions_of(run.info.run_id)
    scores = {k: v for k, v in run.data.metrics.items()
              if k.startswith(("test_", "baseline_"))}
    config = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/{CONFIG_ARTIFACT}"))
    return FoldOutcome(fold, scores, index, probabilities, config,
                       run.data.tags["mammo.best_trial_run"])


def predictions_of(run_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns (image index, probability (N,) or probabilities (N, K)) from a run's
    predictions/test.csv."""
    text = mlflow.artifacts.load_text(f"runs:/{run_id}/predictions/test.csv")
    table = np.loadtxt(text.splitlines()[1:], delimiter=",", ndmin=2)
    return table[:, 0].astype(int), table[:, 2] if table.shape[1] == 3 else table[:, 2:]


def _fold_runs(parent_id: str, fold: int, status_filter: str) -> list:
    return mlflow.search_runs(
        search_all_experiments=True, output_format="list",
        filter_string=(f"tags.mlflow.parentRunId = '{parent_id}' and tags.mammo.kind = 'fold' "
                       f"and tags.mammo.fold = '{fold}' and {status_filter}"),
        order_by=["attributes.start_time DESC"])
