"""`train` entry point: one CNN on a grouped train / validation / test split, in MLflow.

    python -m tune.train --config experiments/microcal_quick.yaml

Logs: the resolved config (params + YAML), the data summary, the split (and each part
as a dataset input), the data's first look (examples, histograms, labels per part),
per-epoch learning curves, validation and test metrics, ROC / confusion / learning-curve
figures, and the Keras model with its signature.
"""
from __future__ import annotations

import os
import sys

import mlflow
import numpy as np
import pandas as pd

from mammo_core import metrics, splits
from mammo_core.config import Experiment
from mammo_core.dataset import Dataset
from mammo_core.families import build_model, count_params, recipe_for
from mammo_core.preprocessing import preprocess
from mammo_core.registry import LAYOUTS
from mammo_core.tracking import (EpochLogger, log_experiment_config, log_figure,
                                 log_keras_model, log_yaml, tracked_run, use_tracking_store)
from mammo_core.training import fit, predict_proba, set_seed
from tune.evaluation import evaluate_on_test
from tune.project import (PROJECT_ROOT, base_parser, load_config, load_data, log_data,
                          log_data_parts, log_exploration, run_entry)


def main(argv: list[str] | None = None) -> int:
    args = base_parser(__doc__.splitlines()[0]).parse_args(argv)

    def body() -> None:
        experiment, config_path = load_config(args.config)
        print(f"tracking: {use_tracking_store(PROJECT_ROOT)}")
        with tracked_run(experiment.tracking.experiment_name, f"train-{experiment.name}",
                         tags={"mammo.entry_point": "train"},
                         run_id=os.environ.get("MLFLOW_RUN_ID")) as run:
            log_experiment_config(experiment, config_path)
            dataset, summary = load_data(experiment, args.data_dir)
            log_data(dataset, summary)
            test = train_and_evaluate(experiment, dataset)
        print(f"run {run.info.run_id} FINISHED: test AUC {test['test_auc']:.3f} (baselines "
              "on the same images: " + ", ".join(
                  f"{name} {test[key]:.3f}" for name, key in (
                      ("max pixel", "baseline_max_pixel_test_auc"),
                      ("logistic regression", "baseline_logreg_test_auc")) if key in test)
              + "), " + ", ".join(f"{m} {test['test_' + m]:.3f}" for m in (
                  "sensitivity", "specificity", "balanced_accuracy") if "test_" + m in test))

    return run_entry(body)


def train_and_evaluate(experiment: Experiment, dataset: Dataset) -> dict[str, float]:
    """Trains on the train part, selects on val, scores the test part once; returns test metrics.

    Logs val_* and test_* metrics, figures/*, split/* and the model to the active run.
    """
    groups = splits.leakage_groups(dataset, experiment.split.group_by)
    parts = splits.train_val_test_split(dataset.labels, groups, experiment.split)
    log_split(dataset, parts, groups)
    mlflow.set_tag("mlflow.note.content", parts_description(experiment, dataset, parts))
    log_data_parts(dataset, parts)
    images = preprocess(dataset.images, experiment.preprocessing)
    log_exploration(dataset, images, parts, experiment.data.class_names)
    x = {name: images[index] for name, index in parts.items()}
    y = {name: dataset.labels[index] for name, index in parts.items()}
    set_seed(experiment.training.seed)
    model = build_model(experiment.hyperparameters, images.shape[1:], experiment.model,
                        seed=experiment.training.seed, n_classes=experiment.data.n_classes)
    recipe = recipe_for(experiment.hyperparameters, experiment.model, experiment.training)
    mlflow.log_metric("model_weights", count_params(model))
    history = fit(model, (x["train"], y["train"]), (x["val"], y["val"]),
                  experiment.training, recipe, callbacks=[EpochLogger()])
    mlflow.log_metric("epochs_trained", len(history.history["loss"]))
    log_figure(metrics.learning_curves_figure(history.history), "figures/learning_curves.png")
    val = metrics.scores(y["val"], predict_proba(model, x["val"]), experiment.training.threshold)
    mlflow.log_metrics({f"val_{k}": v for k, v in val.items()})
    test, _ = evaluate_on_test(model, experiment, dataset, images, parts)
    log_keras_model(model, x["train"][:4])
    return test


def parts_description(experiment: Experiment, dataset: Dataset,
                      parts: dict[str, np.ndarray]) -> str:
    """Returns the run's description: per part, its images and its cases and ROIs in the
    collection's words (CBIS DICOM: patients and abnormalities)."""
    cases, rois = getattr(LAYOUTS.module(experiment.data.layout), "GROUP_WORDS", ("cases", "ROIs"))
    lines = [f"**Train** of `{experiment.name}` ({experiment.data.layout} data at "
             f"`{dataset.root}`), split by `{experiment.split.group_by}`:", ""]
    lines += [f"- {name}: {len(index)} images, {len(np.unique(dataset.cases[index]))} {cases}, "
              f"{len(np.unique(dataset.rois[index]))} {rois}" for name, index in parts.items()]
    return "\n".join(lines)


def log_split(dataset: Dataset, parts: dict[str, np.ndarray], groups: np.ndarray) -> None:
    """Logs part sizes (split/summary.yaml) and each image's part (split/assignments.csv)."""
    log_yaml(splits.describe(parts, dataset.labels, groups), "split/summary.yaml")
    part_of = np.empty(len(dataset.labels), dtype=object)
    for name, index in parts.items():
        part_of[index] = name
    table = pd.DataFrame({"path": dataset.paths, "label": dataset.labels, "case": dataset.cases,
                          "roi": dataset.rois, "group": groups, "part": part_of})
    mlflow.log_text(table.to_csv(index=False), "split/assignments.csv")  # quotes commas in paths


if __name__ == "__main__":
    sys.exit(main())
