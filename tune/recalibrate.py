"""`recalibrate` entry point: refit a registered ensemble's calibration and threshold for a new site.

    mlflow run . -e recalibrate --env-manager local -P data_dir=/data/site_a -P site=site_a
    python -m tune.recalibrate --data-dir /data/site_a --site site_a

A new scanner can keep the ranking (AUC) and still move every probability, so the
registered threshold stops meaning what it did. This step keeps the experts and their
weights, and refits the Platt calibration on a small labelled sample of the new source.
The threshold, a cut on the *calibrated* probability, keeps its registered value by
default (`--threshold keep`): once the site's scores are calibrated it means what it
meant on the large hold-out, while a Youden point re-chosen on ~20 images is noisy
(measured: balanced accuracy 0.935 ± 0.022 kept vs 0.923 ± 0.036 re-chosen, 20 patches,
docs/benchmarks.md). `--threshold refit` re-chooses it with the registry's rule; a model
registered without calibration always refits it. It reports the metrics before (the model as registered) and
after, the "after" figures cross-fitted inside the sample (each part scored by a fit on the
other parts), then registers a new version with the same experts under the alias
`site-<site>` and a model card that names the site.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from mammo_core import ensemble as ens
from mammo_core import metrics
from mammo_core.calibration import Calibration
from mammo_core.config import Experiment
from mammo_core.ensemble import Ensemble
from mammo_core.predictor import EnsemblePredictor
from mammo_core.sources import resolve_data_root
from mammo_core.splits import leakage_groups
from mammo_core.tracking import log_figure, registry_reference, tracked_run, use_tracking_store
from tune.project import (PROJECT_ROOT, UsageError, as_trained, base_parser, default_model_uri,
                          load_config, load_data, load_ensemble, log_data_parts, run_entry)
from tune.register import check_round_trip, log_and_register

SHOWN = ("auc", "sensitivity", "specificity", "balanced_accuracy", "ece")


def main(argv: list[str] | None = None) -> int:
    parser = site_parser(__doc__.splitlines()[0])
    parser.add_argument("--threshold", default="keep", choices=["keep", "refit"],
                        help="keep the registered threshold on the recalibrated probability, "
                             "or re-choose it on the sample")
    args = parser.parse_args(argv)

    def body() -> None:
        experiment, _ = load_config(args.config)
        print(f"tracking: {use_tracking_store(PROJECT_ROOT)}")
        recalibrate(experiment, args.data_dir, args.model_uri, args.site, args.threshold,
                    run_id=os.environ.get("MLFLOW_RUN_ID"))

    return run_entry(body)


def site_parser(description: str):
    """Returns the parser of a step that registers a site's version: --config, --data-dir,
    --model-uri and --site."""
    parser = base_parser(description)
    parser.add_argument("--model-uri", default="",
                        help="registered ensemble (default: models:/<name>@champion)")
    parser.add_argument("--site", default="", help="site name for the alias (default: the "
                                                   "data folder's name)")
    return parser


def recalibrate(experiment: Experiment, data_dir: str, model_uri: str = "", site: str = "",
                threshold: str = "keep", run_id: str | None = None) -> tuple[str, str]:
    """Registers the site-recalibrated version; returns (version, alias).

    Logs before_* / after_* metrics (after: cross-fitted in the sample), the new
    calibration and threshold, figures/site_reliability.png and the model.
    """
    if not data_dir:
        raise UsageError("recalibrate needs the new site's labelled images: pass -P data_dir=")
    uri = model_uri or default_model_uri(experiment)
    site = site_name(site or Path(data_dir).name)
    # a wrong folder is named before the model is loaded
    resolve_data_root(experiment.data, PROJECT_ROOT, explicit=data_dir, download=False)
    predictor = load_ensemble(uri)
    experiment = as_trained(experiment, predictor, uri)
    dataset, _ = load_data(experiment, data_dir, any_file_names=True)
    if predictor.experiment.data.n_classes != 2:
        raise UsageError("recalibrate refits a binary threshold; this model has several classes")
    groups = leakage_groups(dataset, "case")
    with tracked_run(experiment.tracking.experiment_name, f"recalibrate-{site}",
                     tags={"mammo.entry_point": "recalibrate", "mammo.kind": "recalibrate",
                           "mammo.model_uri": uri, "mammo.site": site}, run_id=run_id):
        mlflow.log_params({"resolved_model_uri": uri, "site": site, "images": len(groups),
                           "threshold_mode": threshold,
                           "data_root": dataset.root, "data_fingerprint": dataset.fingerprint()})
        log_data_parts(dataset, {"recalibration": np.arange(len(dataset.labels))})
        experts_p = predictor.expert_probabilities(predictor.model_inputs(dataset.images))
        kept = kept_threshold(predictor.ensemble, threshold)
        refit = site_ensemble(predictor.ensemble, experts_p, dataset.labels, groups,
                              predictor.experiment, kept)
        name = registry_reference(uri)["name"] or experiment.tracking.registered_model_name
        return register_site(predictor, refit, dataset.images, name, site, uri)


def kept_threshold(current: Ensemble, mode: str) -> float | None:
    """Returns the registered threshold to keep, or None to re-choose it (`refit`, or a
    model registered without calibration, whose threshold cuts uncalibrated scores)."""
    return current.threshold if mode == "keep" and current.calibration != Calibration() else None


def site_ensemble(current: Ensemble, experts_p: np.ndarray, labels: np.ndarray,
                  groups: np.ndarray, experiment: Experiment,
                  threshold: float | None = None) -> Ensemble:
    """Returns the ensemble with the same weights, a calibration fitted on this sample and
    `threshold` (None: re-chosen on the sample); logs and prints the metrics before and
    after (cross-fitted)."""
    if len(np.unique(labels)) < 2:
        raise UsageError("the site sample needs labelled images of both classes")
    registry = experiment.registry.replace(calibration="platt")
    before = scores(labels, current.combine(experts_p), current.threshold)
    after_p, after_t = cross_fitted(current.weights, experts_p, labels, groups, registry,
                                    threshold)
    after = scores(labels, after_p, after_t)
    mlflow.log_metrics({f"before_{k}": v for k, v in before.items()}
                       | {f"after_{k}": v for k, v in after.items()})
    for label, values in (("before (as registered)", before), ("after (cross-fitted)", after)):
        print(f"{label:24s} " + ", ".join(f"{k} {values[k]:.3f}" for k in SHOWN))
    refit = ens.calibrated(current.weights, experts_p, labels, registry, threshold)
    log_figure(metrics.reliability_figure(labels, {"as registered": current.combine(experts_p),
                                                   "recalibrated (cross-fitted)": after_p},
                                          title="Site sample"), "figures/site_reliability.png")
    mlflow.log_params({"site.threshold": f"{refit.threshold:.6f}"}
                      | {f"site.calibration.{k}": f"{v:.4f}"
                         for k, v in refit.calibration.to_dict().items()})
    return refit


def cross_fitted(weights: np.ndarray, experts_p: np.ndarray, labels: np.ndarray,
                 groups: np.ndarray, registry,
                 threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Returns out-of-part (probabilities, thresholds): each grouped part of the sample is
    scored by a calibration and threshold fitted on the other parts."""
    n_splits = min(registry.cross_fit_folds, len(np.unique(groups)),
                   int(np.bincount(labels).min()))
    if n_splits < 2:
        raise UsageError("the site sample is too small to cross-fit: it needs at least two "
                         "labelled images of each class")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=0)
    probabilities, thresholds = np.zeros(len(labels)), np.zeros(len(labels))
    for fit_part, score_part in splitter.split(experts_p, labels, groups):
        if len(np.unique(labels[fit_part])) < 2:
            raise UsageError("a cross-fitting part of the site sample holds one class only; "
                             "label more images of each class")
        site = ens.calibrated(weights, experts_p[fit_part], labels[fit_part], registry,
                              threshold)
        probabilities[score_part] = site.combine(experts_p[score_part])
        thresholds[score_part] = site.threshold
    return probabilities, thresholds


def scores(labels: np.ndarray, probabilities: np.ndarray, thresholds) -> dict[str, float]:
    """Returns the binary metrics plus balanced accuracy and ECE."""
    out = metrics.scores(labels, probabilities, thresholds)
    out["balanced_accuracy"] = metrics.balanced_accuracy(out)
    out["ece"] = metrics.expected_calibration_error(labels, probabilities)
    return out


def register_site(predictor: EnsemblePredictor, refit: Ensemble, raw: np.ndarray, name: str,
                  site: str, source_uri: str) -> tuple[str, str]:
    """Registers the experts with the refitted ensemble; points `site-<site>` at it."""
    recalibrated = replace(predictor, ensemble=refit)
    source = registry_reference(source_uri)
    card = (f"# {name} v{{version}}: recalibrated for site `{site}`\n\n"
            f"The experts and weights of `{source_uri}` (v{source['version']}); the Platt "
            f"calibration (slope {refit.calibration.slope:.3f}, intercept "
            f"{refit.calibration.intercept:.3f}) and the threshold {refit.threshold:.4f} were "
            f"refitted on {len(raw)} labelled images of site `{site}` (recalibrate run "
            f"`{mlflow.active_run().info.run_id}`). Research only; not for diagnosis.\n")
    return register_site_version(recalibrated, raw, name, site, source_uri, card,
                                 {"mammo.recalibrated_from": source_uri})


def register_site_version(site_predictor: EnsemblePredictor, raw: np.ndarray, name: str,
                          site: str, source_uri: str, card: str,
                          tags: dict[str, str]) -> tuple[str, str]:
    """Registers a site's version of a model (`card` may hold `{version}`), checks it
    loads back to the same scores, tags it, and points `site-<site>` at it (the champion
    does not move); returns (version, alias)."""
    version = log_and_register(site_predictor, raw, name)
    check_round_trip(name, version, raw, site_predictor.ensemble.combine(
        site_predictor.expert_probabilities(site_predictor.model_inputs(raw))))
    alias = f"site-{site}"
    client = mlflow.MlflowClient()
    card = card.replace("{version}", version)
    client.update_model_version(name, version, description=card)
    for key, value in {"mammo.site": site, "mammo.register_run": mlflow.active_run().info.run_id,
                       **tags}.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, alias, version)
    mlflow.set_tags({"mammo.model_version": version, "mammo.model_alias": alias})
    mlflow.log_text(card, "model_card.md")
    print(f"registered {name} v{version} -> @{alias} (same experts as {source_uri})")
    return version, alias


def site_name(raw: str) -> str:
    """Returns a name an alias may hold (letters, digits, - and _)."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", raw).strip("-").lower()
    if not cleaned:
        raise UsageError(f"site name {raw!r} has no letters or digits")
    return cleaned


if __name__ == "__main__":
    sys.exit(main())
