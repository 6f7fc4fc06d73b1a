"""`train` entry point: one CNN on a grouped train / validation / test split, in MLflow.

    python -m tune.train --config experiments/microcal_quick.yaml

Logs: the resolved config (params + YAML), the data summary, the split, per-epoch
learning curves, validation and test metrics, ROC / confusion / learning-curve figures,
and the Keras model with its signature.
"""
from __future__ import annotations

import sys

import mlflow
import numpy as np

from sklearn.metrics import roc_auc_score

from mammo_core import metrics, splits
from mammo_core.baselines import logistic_baseline, max_pixel_scores
from mammo_core.config import ConfigError, Experiment
from mammo_core.data import DataError, Dataset
from mammo_core.hypermodel import build_model
from mammo_core.preprocessing import preprocess
from mammo_core.tracking import (EpochLogger, log_experiment_config, log_figure,
                                 log_keras_model, log_yaml, tracked_run, use_tracking_store)
from mammo_core.training import fit, predict_proba, set_seed
from tune.project import PROJECT_ROOT, base_parser, fail, load_config, load_data, log_data


def main(argv: list[str] | None = None) -> int:
    args = base_parser(__doc__.splitlines()[0]).parse_args(argv)
    try:
        experiment, config_path = load_config(args.config)
        uri = use_tracking_store(PROJECT_ROOT)
        print(f"tracking: {uri}")
        with tracked_run(experiment.tracking.experiment_name, f"train-{experiment.name}",
                         tags={"mammo.entry_point": "train"}) as run:
            log_experiment_config(experiment, config_path)
            dataset, summary = load_data(experiment, args.data_dir)
            log_data(dataset, summary)
            test = train_and_evaluate(experiment, dataset)
        print(f"run {run.info.run_id} FINISHED: test AUC {test['auc']:.3f} "
              f"(baselines on the same images: max pixel "
              f"{test['baseline_max_pixel_test_auc']:.3f}, logistic regression "
              f"{test['baseline_logreg_test_auc']:.3f}), sensitivity {test['sensitivity']:.3f}, "
              f"specificity {test['specificity']:.3f}")
        return 0
    except (ConfigError, DataError) as err:
        return fail(str(err))


def train_and_evaluate(experiment: Experiment, dataset: Dataset) -> dict[str, float]:
    """Trains on the train part, selects on val, scores the test part once; returns test metrics.

    Logs val_* and test_* metrics, figures/*, split/* and the model to the active run.
    """
    groups = splits.leakage_groups(dataset, experiment.split.group_by)
    parts = splits.train_val_test_split(dataset.labels, groups, experiment.split)
    log_split(dataset, parts, groups)
    images = preprocess(dataset.images, experiment.preprocessing)
    x = {name: images[index] for name, index in parts.items()}
    y = {name: dataset.labels[index] for name, index in parts.items()}
    set_seed(experiment.training.seed)
    model = build_model(experiment.hyperparameters, images.shape[1:], experiment.model,
                        seed=experiment.training.seed)
    history = fit(model, (x["train"], y["train"]), (x["val"], y["val"]),
                  experiment.training, callbacks=[EpochLogger()])
    mlflow.log_metric("epochs_trained", len(history.history["loss"]))
    log_figure(metrics.learning_curves_figure(history.history), "figures/learning_curves.png")
    scores = {}
    for part in ("val", "test"):
        probabilities = predict_proba(model, x[part])
        scores[part] = metrics.binary_metrics(y[part], probabilities,
                                              experiment.training.threshold)
        mlflow.log_metrics({f"{part}_{k}": v for k, v in scores[part].items()})
    log_test_figures(experiment, y["test"], predict_proba(model, x["test"]))
    log_keras_model(model, x["train"][:4])
    scores["test"].update(log_baselines(dataset, parts))
    return scores["test"]


def log_baselines(dataset: Dataset, parts: dict[str, np.ndarray]) -> dict[str, float]:
    """Scores the brightness baselines on the same test part; logs and returns their AUCs.

    The logistic regression trains on train + val (it has nothing to select).
    """
    fit_index = np.concatenate([parts["train"], parts["val"]])
    test_labels = dataset.labels[parts["test"]]
    scores = {
        "baseline_max_pixel_test_auc": max_pixel_scores(dataset.images[parts["test"]]),
        "baseline_logreg_test_auc": logistic_baseline(
            dataset.images[fit_index], dataset.labels[fit_index], dataset.images[parts["test"]]),
    }
    aucs = {name: float(roc_auc_score(test_labels, s)) for name, s in scores.items()}
    mlflow.log_metrics(aucs)
    return aucs


def log_split(dataset: Dataset, parts: dict[str, np.ndarray], groups: np.ndarray) -> None:
    """Logs part sizes (split/summary.yaml) and each image's part (split/assignments.csv)."""
    log_yaml(splits.describe(parts, dataset.labels, groups), "split/summary.yaml")
    part_of = np.empty(len(dataset.labels), dtype=object)
    for name, index in parts.items():
        part_of[index] = name
    rows = ["path,label,case,roi,group,part"] + [
        f"{p},{l},{c},{r},{g},{part}" for p, l, c, r, g, part in
        zip(dataset.paths, dataset.labels, dataset.cases, dataset.rois, groups, part_of)]
    mlflow.log_text("\n".join(rows) + "\n", "split/assignments.csv")


def log_test_figures(experiment: Experiment, labels: np.ndarray, probabilities: np.ndarray) -> None:
    """Logs figures/roc_test.png and figures/confusion_test.png."""
    names = [experiment.data.class_names.get(k, str(k)) for k in sorted(set(labels.tolist()))]
    log_figure(metrics.roc_figure(labels, probabilities, "ROC, test part"), "figures/roc_test.png")
    matrix = metrics.confusion(labels, probabilities, experiment.training.threshold)
    log_figure(metrics.confusion_figure(matrix, names, "Confusion matrix, test part"),
               "figures/confusion_test.png")


if __name__ == "__main__":
    sys.exit(main())
