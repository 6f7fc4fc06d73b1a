"""`evaluate` entry point: a registered ensemble on any labeled class-folder data set.

    python -m tune.evaluate --data-dir /data/external_test       # champion, external data
    python -m tune.evaluate --model-uri models:/mammo-microcal/3 --holdout-of <search run>

Logs metrics (eval_*), ROC, confusion matrix, galleries of the misclassified and the
worst patches and a predictions table; `mlflow.models.evaluate` adds its classifier
metrics and the data set as a run input, so the run shows in MLflow's evaluation views.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.metrics import MetricValue
from mlflow.models import make_metric
from sklearn.metrics import roc_auc_score

from mammo_core import metrics
from mammo_core.config import Experiment
from mammo_core.dataset import Dataset
from mammo_core.predictor import probabilities_of
from mammo_core.sources import resolve_data_root
from mammo_core.tracking import log_figure, registry_reference, tracked_run, use_tracking_store
from tune.explain import log_explanation_figures
from tune.project import (PROJECT_ROOT, UsageError, as_trained, base_parser, default_model_uri,
                          ensemble_inside, load_config, load_data, load_fold_plan, load_pyfunc,
                          log_data_parts, run_entry)

WORST_ERROR = 0.8  # |label - probability| above this: confidently wrong


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--model-uri", default="",
                        help="pyfunc model URI (default: models:/<registered name>@champion)")
    parser.add_argument("--holdout-of", default="",
                        help="search run id: evaluate on that search's ensemble hold-out only")
    args = parser.parse_args(argv)

    def body() -> None:
        experiment, _ = load_config(args.config)
        print(f"tracking: {use_tracking_store(PROJECT_ROOT)}")
        scores = evaluate_model(experiment, args.model_uri, args.data_dir, args.holdout_of,
                                run_id=os.environ.get("MLFLOW_RUN_ID"))
        print("evaluation: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))

    return run_entry(body)


def evaluate_model(experiment: Experiment, model_uri: str, data_dir: str = "",
                   holdout_of: str = "", run_id: str | None = None,
                   parent_run_id: str | None = None) -> dict[str, float]:
    """Scores `model_uri` on the data set (or a search's hold-out); returns eval metrics."""
    model_uri = model_uri or default_model_uri(experiment)
    if data_dir:  # a wrong folder is named before the model is loaded
        resolve_data_root(experiment.data, PROJECT_ROOT, explicit=data_dir, download=False)
    model = load_pyfunc(model_uri)
    experiment = as_trained(experiment, ensemble_inside(model), model_uri)
    dataset, _ = load_data(experiment, data_dir, any_file_names=True)
    index = np.arange(len(dataset.labels))
    if holdout_of:
        index = load_fold_plan(holdout_of, dataset).holdout
    data_name = f"holdout-{holdout_of[:8]}" if holdout_of else Path(dataset.root).name
    with tracked_run(experiment.tracking.experiment_name, f"evaluate-{data_name}",
                     tags={"mammo.entry_point": "evaluate", "mammo.kind": "evaluate",
                           "mammo.model_uri": model_uri},
                     run_id=run_id, parent_run_id=parent_run_id):
        # resolved_*: `mlflow run` has already logged the parameters as given ('' for the
        # default), and MLflow refuses to change a logged value
        mlflow.log_params({"resolved_model_uri": model_uri, "data_root": dataset.root,
                           "data_fingerprint": dataset.fingerprint(),
                           "subset": f"holdout of {holdout_of}" if holdout_of else "all",
                           "images": len(index)} | model_version_params(model_uri))
        # a search's ensembles fit their weights, calibration and threshold on its hold-out
        prefix = "eval_in_sample_" if holdout_of else "eval_"
        mlflow.set_tag("mammo.figures", "in-sample: the ensemble was fitted on these images; "
                       "the register run's cross-fitted figures are the honest ones"
                       if holdout_of else "held out: images the model was not fitted on")
        log_data_parts(dataset, {"holdout" if holdout_of else "evaluation": index})
        frame = predictions_table(model, dataset, index)
        scores = log_evaluation(experiment, frame, dataset.images[index], prefix)
        predictor = ensemble_inside(model)
        # any pyfunc may be evaluated; explanations are drawn for binary tasks
        if predictor is not None and "probability" in frame:
            log_explanation_figures(predictor, dataset.images[index], frame["label"].to_numpy(),
                                    frame["probability"].to_numpy(), experiment.explanations,
                                    experiment.data.class_names)
        return scores


def model_version_params(model_uri: str) -> dict[str, str]:
    """Returns {model_name, model_version} for a models:/ URI with an alias or a version."""
    ref = registry_reference(model_uri)
    return {"model_name": ref["name"], "model_version": ref["version"]} if ref["name"] else {}


def predictions_table(model, dataset: Dataset, index: np.ndarray) -> pd.DataFrame:
    """Returns path, label, probability (or probability.<class> per class), predicted (and
    expert columns) per image."""
    out = model.predict(dataset.images[index])
    if not isinstance(out, pd.DataFrame) or "label" not in out or not any(
            c == "probability" or c.startswith("probability.") for c in out.columns):
        raise UsageError("the model must return a table with 'probability' (or "
                         "'probability.<class>') and 'label' columns (a registered ensemble does)")
    frame = pd.DataFrame({"path": [dataset.paths[i] for i in index],
                          "label": dataset.labels[index]})
    for column in (c for c in out.columns if c.startswith("probability")):
        frame[column] = out[column].to_numpy()
    frame["predicted"] = out["label"].to_numpy()
    for column in (c for c in out.columns if c.startswith("expert_")):
        frame[column] = out[column].to_numpy()
    return frame


def log_evaluation(experiment: Experiment, frame: pd.DataFrame, images: np.ndarray,
                   prefix: str = "eval_") -> dict[str, float]:
    """Logs <prefix>* metrics (eval_, or eval_in_sample_ on a hold-out the model was fitted
    on), figures, galleries and predictions.csv; returns the metrics."""
    mlflow.log_text(frame.to_csv(index=False), "predictions.csv")
    if "probability" not in frame:
        return log_multiclass_evaluation(experiment, frame, images, prefix)
    labels, probabilities = frame["label"].to_numpy(), frame["probability"].to_numpy()
    scores = metrics.label_metrics(labels, frame["predicted"].to_numpy(), probabilities)
    mlflow.log_metrics({f"{prefix}{k}": v for k, v in scores.items()})
    names = experiment.data.label_names
    log_figure(metrics.roc_figure(labels, probabilities, "ROC"), "figures/roc.png")
    matrix = metrics.confusion(labels, frame["predicted"].to_numpy(), 0.5)
    log_figure(metrics.confusion_figure(matrix, names, "Confusion matrix"), "figures/confusion.png")
    log_galleries(frame, images, probabilities, prefix)
    log_with_mlflow_evaluate(frame)
    return scores


def log_multiclass_evaluation(experiment: Experiment, frame: pd.DataFrame,
                              images: np.ndarray, prefix: str) -> dict[str, float]:
    """Logs <prefix>* metrics (macro AUC, accuracy, per-class recall and AUC), the
    per-class ROC, the K x K confusion matrix and the galleries; returns the metrics."""
    labels, probabilities = frame["label"].to_numpy(), probabilities_of(frame)
    scores = metrics.multiclass_metrics(labels, probabilities)
    mlflow.log_metrics({f"{prefix}{k}": v for k, v in scores.items()})
    names = [c.split(".", 1)[1] for c in frame.columns if c.startswith("probability.")]
    log_figure(metrics.per_class_roc_figure(labels, probabilities, names), "figures/roc.png")
    log_figure(metrics.confusion_figure(metrics.confusion(labels, probabilities), names,
                                        "Confusion matrix"), "figures/confusion.png")
    log_galleries(frame, images, probabilities[np.arange(len(labels)), labels], prefix)
    return scores


def log_galleries(frame: pd.DataFrame, images: np.ndarray, true_class: np.ndarray,
                  prefix: str) -> None:
    """Logs figures/misclassified.png and figures/worst.png (error > WORST_ERROR), where the
    error is 1 - the probability given to the true class (`true_class`, per image)."""
    labels = frame["label"].to_numpy()
    # binary: `true_class` is the positive class's probability
    error = np.abs(labels - true_class) if "probability" in frame else 1 - true_class
    wrong = np.flatnonzero(frame["label"].to_numpy() != frame["predicted"].to_numpy())
    worst = np.flatnonzero(error > WORST_ERROR)
    for name, picked, title in (("misclassified", wrong, "Misclassified at the model's threshold"),
                                ("worst", worst, f"Worst: |label - p| > {WORST_ERROR}")):
        picked = picked[np.argsort(-error[picked])]
        captions = [f"y={labels[i]} p={true_class[i]:.2f}\n"
                    f"{os.path.basename(frame['path'].iat[i])[:18]}" for i in picked]
        log_figure(metrics.patch_gallery_figure(images[picked], captions, title),
                   f"figures/{name}.png")
        mlflow.log_metric(f"{prefix}{name}_count", len(picked))


def log_with_mlflow_evaluate(frame: pd.DataFrame) -> None:
    """Runs mlflow.models.evaluate on the precomputed predictions, with the AUC added.

    On a custom pyfunc MLflow would compute label metrics only; evaluating the table of
    probabilities gives its classifier metrics, confusion plot and the data set lineage.
    """
    def roc_auc(predictions, targets, metrics, probability) -> MetricValue:
        return MetricValue(aggregate_results={"auc": roc_auc_score(targets, probability)})

    table = frame[["label", "predicted", "probability"]]
    quiet = logging.getLogger("mlflow.models.evaluation")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # it guesses the model type from the labels, loudly
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "first row" dry runs warn about one-class AUC
            mlflow.models.evaluate(
                data=table, targets="label", predictions="predicted", model_type="classifier",
                evaluator_config={"log_model_explainability": False},
                extra_metrics=[make_metric(eval_fn=roc_auc, name="roc_auc", greater_is_better=True)])
    finally:
        quiet.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
