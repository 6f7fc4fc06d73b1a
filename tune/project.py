"""What every entry point shares: the project root, argument basics, loading the data."""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from mammo_core import exploration
from mammo_core.config import BaselinesExperiment, ConfigError, Experiment, load_experiment
from mammo_core.data import load_dataset
from mammo_core.dataset import Dataset, format_summary, summarize
from mammo_core.errors import DataError, FileNameError
from mammo_core.folds import FoldPlan
from mammo_core.patches import PatchError
from mammo_core.predictor import EnsemblePredictor
from mammo_core.sources import resolve_data_root
from mammo_core.tracking import log_data_input, log_figure, log_yaml, was_interrupted

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = "experiments/microcal.yaml"
PLAN_ARTIFACT = "fold_plan.json"  # logged by every search; read by every later step


class UsageError(Exception):
    """A request the entry points cannot serve (no search yet, unknown run, bad path)."""


def base_parser(description: str) -> argparse.ArgumentParser:
    """Returns a parser with the options every entry point takes: --config, --data-dir."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help="experiment YAML, relative to the project root or absolute")
    parser.add_argument("--data-dir", default="",
                        help="class-folder data set (default: see README, 'Data')")
    return parser


def load_config(path: str, loader: Callable[[Path], Any] = load_experiment) -> tuple[Any, Path]:
    """Returns the experiment `loader` reads and the absolute path of its YAML file."""
    resolved = Path(path) if Path(path).is_absolute() else PROJECT_ROOT / path
    return loader(resolved), resolved


def load_data(experiment: Experiment | BaselinesExperiment, data_dir: str,
              any_file_names: bool = False) -> tuple[Dataset, dict]:
    """Returns the data set and its per-class summary; prints the summary table.

    With `any_file_names` (data to score, not to split), names the case pattern does not
    match make every file its own group, with one line saying so, instead of an error.
    """
    root = resolve_data_root(experiment.data, PROJECT_ROOT, explicit=data_dir or None)
    try:
        dataset = load_dataset(root, experiment.data)
    except FileNameError as err:
        if not any_file_names:
            raise
        print(f"note: {err}; each file is its own group here", flush=True)
        dataset = load_dataset(root, experiment.data.replace(filename_pattern=None))
    summary = summarize(dataset, experiment.data.class_names)
    print(f"data: {root} ({dataset.bit_depth}-bit, fingerprint {dataset.fingerprint()})")
    print(format_summary(summary), flush=True)
    return dataset, summary


def log_data(dataset: Dataset, summary: dict) -> None:
    """Logs where the data came from, its fingerprint and the per-class summary.

    Params: data_root, data_fingerprint and the reader's notes as data_<note> (DICOM:
    pixel spacing, transfer syntaxes, the tags used); metrics: data_<class>_<count>;
    artifact: data/summary.yaml.
    """
    mlflow.log_params({"data_root": dataset.root, "data_fingerprint": dataset.fingerprint()}
                      | {f"data_{k}": v for k, v in dataset.notes.items()})
    mlflow.log_metrics({f"data_{name}_{key}": value for name, counts in summary.items()
                        for key, value in counts.items()})
    log_yaml(summary, "data/summary.yaml")


def log_data_parts(dataset: Dataset, parts: Mapping[str, np.ndarray]) -> None:
    """Logs each part (e.g. "train", "holdout") as a dataset input of the active run; a
    part named "all" is the whole data set."""
    name, fingerprint = Path(dataset.root).name, dataset.fingerprint()
    for context, index in parts.items():
        log_data_input(dataset.images, dataset.labels, dataset.root, name, fingerprint,
                       context, None if context == "all" else index)


def log_exploration(dataset: Dataset, preprocessed: np.ndarray,
                    parts: Mapping[str, np.ndarray], class_names: Mapping[int, str]) -> None:
    """Logs the data's first look: figures/data_examples.png (raw) and
    data_examples_filtered.png (the same patches after the preprocessing),
    data_histograms.png, data_part_labels.png and data/part_labels.csv (image count per
    label and part); data_overview.png where the collection has full images with ROI
    masks (a mammogram with its ROI outlined beside images per class)."""
    log_figure(exploration.examples_figure(dataset.images, dataset.labels, class_names),
               "figures/data_examples.png")
    log_figure(exploration.examples_figure(preprocessed, dataset.labels, class_names,
                                           filtered=True), "figures/data_examples_filtered.png")
    log_figure(exploration.histogram_figure(dataset.images, dataset.labels, class_names),
               "figures/data_histograms.png")
    if dataset.overview is not None:
        log_figure(exploration.overview_figure(dataset.overview, dataset.images, dataset.labels,
                                               class_names), "figures/data_overview.png")
    rows = exploration.label_counts(parts, dataset.labels)
    log_figure(exploration.fold_counts_figure(rows, class_names), "figures/data_part_labels.png")
    mlflow.log_text(pd.DataFrame(rows).to_csv(index=False), "data/part_labels.csv")


def fail(message: str) -> int:
    """Prints an error for the user and returns the exit status for bad input."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def run_entry(body: Callable[[], None], after_interrupt: str = "") -> int:
    """Runs an entry point's body; returns its exit status.

    0 on success; 2 with a one-line error for bad input (config, data, patches, an
    unknown run); 130 after Ctrl-C or SIGTERM, when the open runs are already KILLED.
    Anything else is a bug and keeps its traceback.
    """
    try:
        body()
        return 0
    except (ConfigError, DataError, PatchError, UsageError) as err:
        return fail(str(err))
    except BaseException as err:
        if not was_interrupted(err):
            raise
        print(f"interrupted: open runs were marked KILLED{after_interrupt}", file=sys.stderr)
        return 130


def git_commit() -> str:
    """Returns the project's git commit (with "+dirty" for local changes), or "unknown"."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def default_model_uri(experiment: Experiment) -> str:
    """Returns models:/<registered name>@<champion alias> of the experiment."""
    return f"models:/{experiment.tracking.registered_model_name}@{experiment.registry.champion_alias}"


def load_pyfunc(uri: str) -> mlflow.pyfunc.PyFuncModel:
    """Returns the pyfunc model at `uri`; raises UsageError naming it if it cannot be loaded."""
    try:
        return mlflow.pyfunc.load_model(uri)
    except MlflowException as err:
        raise UsageError(f"cannot load model '{uri}': {err.message}") from err


def ensemble_inside(model: mlflow.pyfunc.PyFuncModel) -> EnsemblePredictor | None:
    """Returns the EnsemblePredictor a loaded pyfunc wraps, or None for any other model."""
    predictor = getattr(model.unwrap_python_model(), "predictor", None)
    return predictor if isinstance(predictor, EnsemblePredictor) else None


def load_ensemble(uri: str) -> EnsemblePredictor:
    """Returns the EnsemblePredictor inside a registered pyfunc ensemble."""
    predictor = ensemble_inside(load_pyfunc(uri))
    if predictor is None:
        raise UsageError(f"'{uri}' is not a registered mammo ensemble")
    return predictor


# What a trained model fixes about its inputs: a config that says otherwise would read or
# name them differently from the data the model learned.
FIXED_BY_THE_MODEL = ("data.layout", "data.image_size", "data.pairs", "data.label_names",
                      "preprocessing")


def as_trained(experiment: Experiment, predictor: EnsemblePredictor | None,
               uri: str) -> Experiment:
    """Returns `experiment` reading data as the model at `uri` was trained to (its data and
    preprocessing sections; the config keeps where its data lie, and its tracking). Raises
    UsageError naming both values where the config disagrees on FIXED_BY_THE_MODEL. A
    pyfunc that is not an ensemble (None) leaves `experiment` as it is."""
    if predictor is None:
        return experiment
    trained = predictor.experiment
    for key in FIXED_BY_THE_MODEL:
        ours, theirs = _at(experiment, key), _at(trained, key)
        if ours != theirs:
            raise UsageError(f"the config ({experiment.name}) disagrees with the model {uri} on "
                             f"{key}: the config has {ours}, the model was trained with "
                             f"{theirs}; pass the model's own study config")
    # DICOM is read wherever an image is, also by models trained before it was
    extensions = tuple(dict.fromkeys((*trained.data.extensions, ".dcm")))
    return experiment.replace(data=trained.data.replace(root=experiment.data.root,
                                                        extensions=extensions),
                              preprocessing=trained.preprocessing)


def _at(experiment: Experiment, dotted: str) -> Any:
    value: Any = experiment
    for part in dotted.split("."):
        value = getattr(value, part)
    return value.model_dump() if hasattr(value, "model_dump") else value


def latest_search(experiment_name: str) -> str:
    """Returns the newest FINISHED search run of the experiment; raises UsageError if none."""
    found = mlflow.get_experiment_by_name(experiment_name)
    runs = [] if found is None else mlflow.MlflowClient().search_runs(
        [found.experiment_id], "tags.mammo.kind = 'search' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise UsageError(f"no finished search in experiment '{experiment_name}': run the tune "
                         f"entry point first, or pass --search-run")
    return runs[0].info.run_id


def finished_fold_runs(search_run: str, n_folds: int) -> dict[int, Run]:
    """Returns {fold: finished fold run} of a search; raises UsageError if any is missing."""
    # All experiments: under `mlflow run` the parent can sit in another experiment.
    runs = mlflow.search_runs(
        search_all_experiments=True, output_format="list",
        filter_string=f"tags.mlflow.parentRunId = '{search_run}' and tags.mammo.kind = 'fold' "
                      "and attributes.status = 'FINISHED'")
    by_fold = {int(r.data.tags["mammo.fold"]): r for r in runs}
    if sorted(by_fold) != list(range(n_folds)):
        raise UsageError(f"search {search_run} has finished folds {sorted(by_fold)} of "
                         f"{n_folds}: resume it first")
    return by_fold


def load_fold_plan(run_id: str, dataset: Dataset) -> FoldPlan:
    """Returns the fold plan a search logged; raises ValueError if made for other data."""
    return FoldPlan.from_json(download_text(run_id, PLAN_ARTIFACT), dataset)


def download_text(run_id: str, path: str) -> str:
    """Returns a text artifact of a run (any tracking store, local or HTTP)."""
    with tempfile.TemporaryDirectory() as folder:
        return Path(mlflow.MlflowClient().download_artifacts(run_id, path, folder)).read_text()
