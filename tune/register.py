"""`register` entry point: a search's fold experts + learned weights -> one registered pyfunc.

    python -m tune.register --config experiments/microcal_quick.yaml
    python -m tune.register --search-run <parent run id>
    python -m tune.register --search-run <search A>,<search B>   # across architectures

Reads the search's config, fold plan and experts; scores the experts on the ensemble
hold-out (images none of them trained on); compares plain average, learned weights and
best single expert with cross-fitted estimates; registers the learned ensemble under the
config's model name with a model card; moves the champion alias only if the new version
is at least as good as the champion on the same hold-out.

Several finished searches of the same data, preprocessing and fold plan (different model
families, say: the CBIS report averaged a scratch CNN, a VGG16 and an InceptionV3) give
one ensemble of all their fold experts, weighted, calibrated and gated the same way.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import yaml
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types.utils import _infer_schema

from mammo_core import ensemble as ens
from mammo_core.adaptation import IntensityReference, fit_reference
from mammo_core.calibration import bootstrap_interval
from mammo_core import metrics
from mammo_core.config import Experiment, experiment_from_dict
from mammo_core.dataset import Dataset
from mammo_core.errors import DataError
from mammo_core.explanations import shap_backgrounds
from mammo_core.families import family_of_model
from mammo_core.folds import FoldPlan
from mammo_core.model_card import CardFacts, input_shape, render_card
from mammo_core.predictor import EnsemblePredictor, probabilities_of, write_bundle
from mammo_core.tracking import (log_figure, runtime_requirements, tracked_run,
                                 use_tracking_store)
from tune.explain import log_explanation_figures
from tune.project import (PROJECT_ROOT, UsageError, base_parser, download_text,
                          finished_fold_runs, git_commit, latest_search, load_config, load_data,
                          load_fold_plan, log_data_parts, run_entry)

MODEL_CODE = Path(__file__).with_name("ensemble_pyfunc.py")
MODEL_ARTIFACT = "ensemble"


@dataclass(frozen=True)
class Registration:
    run_id: str
    model_name: str
    version: str
    alias: str
    reason: str
    holdout_auc: float  # cross-fitted, of the registered method: what the gate compares


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--search-run", default="",
                        help="search parent run id, or several separated by commas for one "
                             "ensemble of all their experts (default: the latest finished "
                             "search)")
    args = parser.parse_args(argv)

    def body() -> None:
        experiment, _ = load_config(args.config)
        print(f"tracking: {use_tracking_store(PROJECT_ROOT)}")
        print(summary_line(register_search(experiment, args.search_run, args.data_dir,
                                           run_id=os.environ.get("MLFLOW_RUN_ID"))))

    return run_entry(body)


def summary_line(r: Registration) -> str:
    return (f"registered {r.model_name} v{r.version} -> @{r.alias} (cross-fitted hold-out "
            f"AUC {r.holdout_auc:.4f}): {r.reason}")


def register_search(experiment: Experiment, search_run: str, data_dir: str = "",
                    run_id: str | None = None, parent_run_id: str | None = None) -> Registration:
    """Registers the ensemble of `search_run` (default: latest finished search), or of
    several searches (ids separated by commas: all their experts); returns it.

    The experts' preprocessing and data settings come from the searches' own logged
    config (the first search's; the others must agree, see `combined_config`);
    `experiment` contributes the registry and tracking settings.
    Raises UsageError naming the searches whose data or fold plans differ.
    """
    runs = [r.strip() for r in search_run.split(",") if r.strip()] \
        or [latest_search(experiment.tracking.experiment_name)]
    search_run = ",".join(runs)
    trained = combined_config(runs).replace(registry=experiment.registry,
                                            tracking=experiment.tracking)
    dataset, summary = load_data(trained, data_dir)
    plan = combined_plan(runs, dataset)
    with tracked_run(experiment.tracking.experiment_name, f"register-{trained.name}",
                     tags={"mammo.entry_point": "register", "mammo.kind": "register",
                           "mammo.search_run": search_run},
                     run_id=run_id, parent_run_id=parent_run_id) as run:
        # resolved_search_run: `mlflow run` already logged search_run as given ('' = latest)
        mlflow.log_params({"resolved_search_run": search_run, "model_name": experiment.tracking
                           .registered_model_name} | {f"registry.{k}": v for k, v in
                                                      experiment.registry.model_dump().items()})
        log_data_parts(dataset, {"holdout": plan.holdout})
        version, alias, reason, auc = build_and_register(trained, dataset, summary, plan, runs)
    return Registration(run.info.run_id, experiment.tracking.registered_model_name,
                        version, alias, reason, auc)


def build_and_register(experiment: Experiment, dataset: Dataset, summary: dict, plan: FoldPlan,
                       runs: list[str]) -> tuple[str, str, str, float]:
    """Fits, logs, registers and gates the ensemble of the searches' experts (`runs`, in
    order, each's fold experts in fold order); returns (version, alias, reason, AUC)."""
    n_folds = experiment.cross_validation.n_folds
    experts = [expert for run in runs for expert in load_experts(run, n_folds)]
    mlflow.log_params({f"expert.{i}.family": family_of_model(e) for i, e in enumerate(experts)}
                      | ({f"expert.{i}.search_run": runs[i // n_folds]
                          for i in range(len(experts))} if len(runs) > 1 else {}))
    search_run = ",".join(runs)
    k, explain = len(experts), experiment.explanations
    backgrounds = shap_backgrounds(dataset.images, [f.train for f in plan.folds] * len(runs),
                                   experiment.preprocessing, explain.background_size, explain.seed)
    predictor = EnsemblePredictor(experts, ens.Ensemble(np.full(k, 1 / k), 0.5), experiment,
                                  dataset.bit_depth, backgrounds,
                                  log_intensity_reference(dataset, plan))
    raw, labels = dataset.images[plan.holdout], dataset.labels[plan.holdout]
    groups = plan.groups[plan.holdout]
    print(f"hold-out: {len(raw)} images in {len(np.unique(groups))} groups; scoring {k} experts")
    experts_p = predictor.expert_probabilities(predictor.model_inputs(raw))
    comparison = compare_methods(experts_p, labels, groups, experiment)
    method, why = chosen_method(comparison, experiment.registry.method)
    predictor.ensemble = ens.fit_ensemble(experts_p, labels, method, experiment.registry)
    in_sample_auc = log_final_ensemble(predictor.ensemble, experts_p, labels)
    cross_fitted_auc = comparison[method]["auc"]
    interval = threshold_interval(predictor.ensemble, experts_p, labels, experiment)
    name = experiment.tracking.registered_model_name
    version = log_and_register(predictor, raw, name)
    check_round_trip(name, version, raw, predictor.ensemble.combine(experts_p))
    facts = CardFacts(name, version, experiment, dataset.fingerprint(),
                      {c: n["images"] for c, n in summary.items() if c != "all"}, len(raw),
                      len(np.unique(groups)), search_run, git_commit(),
                      search_metrics(runs[0]), comparison,
                      tuple(float(w) for w in predictor.ensemble.weights),
                      predictor.ensemble.threshold, dataset.bit_depth, method, why, interval,
                      predictor.ensemble.calibration.to_dict(),
                      intensity=predictor.reference.summary["all"] if predictor.reference
                      else None)
    fingerprint = holdout_fingerprint(dataset, plan)
    # full precision: the gate compares the next candidate with this very number
    describe_version(facts, {"mammo.holdout_auc_cross_fitted": repr(float(cross_fitted_auc)),
                             "mammo.holdout_auc_in_sample": repr(float(in_sample_auc)),
                             "mammo.holdout_fingerprint": fingerprint})
    alias, reason = promote(experiment, name, version, cross_fitted_auc, fingerprint)
    if experiment.data.n_classes == 2:
        log_explanation_figures(predictor, raw, labels, predictor.ensemble.combine(experts_p),
                                explain, experiment.data.class_names)
    else:  # Grad-CAM / SHAP of several classes are not built yet
        mlflow.set_tag("mammo.explanations", "binary models only")
    return version, alias, reason, cross_fitted_auc


def log_intensity_reference(dataset: Dataset, plan: FoldPlan) -> IntensityReference | None:
    """Returns the intensity reference of the images the experts trained on (everything
    but the hold-out), which `adapt` maps a new site onto; logs it
    (intensity_reference.json, params intensity.*). None, with a tag saying why, when the
    data cannot give one: the model is still registered, `adapt` then refuses it."""
    trained = np.setdiff1d(np.arange(len(dataset.labels)), plan.holdout)
    try:
        reference = fit_reference(dataset.images[trained], dataset.labels[trained],
                                  plan.groups[trained])
    except (ValueError, np.linalg.LinAlgError) as err:
        mlflow.set_tag("mammo.intensity_reference", f"none: {err}"[:500])
        print(f"note: no intensity reference for `adapt` ({err})", flush=True)
        return None
    mlflow.log_dict(reference.to_dict(), "intensity_reference.json")
    mlflow.log_params({f"intensity.{k}": f"{v:.6g}" for k, v in reference.summary["all"].items()}
                      | {"intensity.case_spread_log_gain": f"{reference.case_spread[0]:.4f}",
                         "intensity.case_spread_offset": f"{reference.case_spread[1]:.4f}",
                         "intensity.noise_levels": " ".join(f"{sigma:g}" for sigma, _ in
                                                            reference.noisy) or "none"})
    return reference


def chosen_method(comparison: dict[str, dict[str, float]], configured: str) -> tuple[str, str]:
    """Returns (the ensemble method to register, why); logs both (ensemble.method, tag
    mammo.ensemble_choice)."""
    if configured != "auto":
        method, why = configured, f"{configured}, set by registry.method"
    else:
        method = ens.winner(comparison)
        why = (f"{method}: best cross-fitted hold-out AUC ("
               + ", ".join(f"{m} {s['auc']:.4f}" for m, s in comparison.items())
               + "; ties go to the simpler method)")
    mlflow.log_param("ensemble.method", method)
    mlflow.set_tag("mammo.ensemble_choice", why)
    print(f"registering the {why}")
    return method, why


def threshold_interval(ensemble: ens.Ensemble, experts_p: np.ndarray, labels: np.ndarray,
                       experiment: Experiment) -> tuple[float, float] | None:
    """Returns the 90 % bootstrap interval of the threshold rule on the hold-out (binary
    tasks; logs ensemble.threshold_low / _high), or None for several classes."""
    combined = ensemble.combine(experts_p)
    if combined.ndim == 2 or experiment.registry.threshold == "fixed":
        return None
    low, high = bootstrap_interval(labels, combined, lambda y, p: ens.choose_threshold(
        y, p, experiment.registry), seed=experiment.split.seed)
    mlflow.log_params({"ensemble.threshold_low": f"{low:.4f}", "ensemble.threshold_high":
                       f"{high:.4f}"})
    return low, high


def describe_version(facts: CardFacts, figures: dict[str, str]) -> None:
    """Sets the version's model card (description), its provenance tags and `figures` (the
    hold-out tags); logs model_card.md."""
    card = render_card(facts)
    mlflow.log_text(card, "model_card.md")
    client = mlflow.MlflowClient()
    client.update_model_version(facts.model_name, facts.version, description=card)
    for key, value in ({"mammo.search_run": facts.search_run, "mammo.git_commit": facts.git_commit,
                       "mammo.config_hash": facts.experiment.fingerprint(),
                       "mammo.register_run": mlflow.active_run().info.run_id} | figures).items():
        client.set_model_version_tag(facts.model_name, facts.version, key, value)


def compare_methods(experts_p: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                    experiment: Experiment) -> dict[str, dict[str, float]]:
    """Returns cross-fitted hold-out metrics per method (average, learned, best single).

    Logs holdout_<method>_<metric>, figures/holdout_roc.png and
    holdout/cross_fitted.csv (every image's expert and cross-fitted probabilities).
    """
    scores, curves = {}, {}
    table = pd.DataFrame({"label": labels, "group": groups})
    several = experts_p.ndim == 3
    for k in range(experts_p.shape[1]):
        table[f"expert_{k}"] = experts_p[:, k].tolist() if several else experts_p[:, k]
    for method in ens.METHODS:
        probabilities, thresholds = ens.cross_fit(experts_p, labels, groups, method,
                                                  experiment.registry, experiment.split.seed)
        scores[method] = metrics.scores(labels, probabilities, thresholds)
        if not several:
            scores[method]["ece"] = metrics.expected_calibration_error(labels, probabilities)
        curves[method.replace("_", " ")] = probabilities
        table[method] = probabilities.tolist() if several else probabilities
        mlflow.log_metrics({f"holdout_{method}_{m}": v for m, v in scores[method].items()})
        print(f"hold-out, {method:11s} (cross-fitted): " + ", ".join(
            f"{m} {scores[method][m]:.4f}" for m in (
                ("auc", "accuracy", "balanced_accuracy") if several
                else ("auc", "sensitivity", "specificity"))))
    if several:
        names = experiment.data.label_names
        log_figure(metrics.per_class_roc_figure(labels, curves["learned"], names,
                                                "Ensemble hold-out (learned), cross-fitted"),
                   "figures/holdout_roc.png")
        log_figure(metrics.confusion_figure(metrics.confusion(labels, curves["learned"]), names,
                                            "Ensemble hold-out (learned), cross-fitted"),
                   "figures/holdout_confusion.png")
    else:
        log_figure(metrics.roc_comparison_figure(labels, curves, "Ensemble hold-out, "
                                                 "cross-fitted"), "figures/holdout_roc.png")
        log_figure(metrics.reliability_figure(labels, curves, title="Ensemble hold-out, "
                                              "cross-fitted"), "figures/holdout_reliability.png")
    mlflow.log_text(table.to_csv(index=False), "holdout/cross_fitted.csv")
    return scores


def log_final_ensemble(ensemble: ens.Ensemble, experts_p: np.ndarray, labels: np.ndarray) -> float:
    """Logs the registered weights, threshold and the hold-out AUC of the weights fitted
    on all of it (holdout_auc_in_sample: optimistic, never a gate); returns that AUC."""
    mlflow.log_params({f"ensemble.weight.fold{k}": f"{w:.4f}"
                       for k, w in enumerate(ensemble.weights)})
    mlflow.log_param("ensemble.threshold", f"{ensemble.threshold:.6f}")
    auc = metrics.auc(labels, ensemble.combine(experts_p))
    mlflow.log_metric("holdout_auc_in_sample", auc)
    mlflow.log_dict(ensemble.to_dict(), "ensemble.json")
    return auc


def log_and_register(predictor: EnsemblePredictor, raw: np.ndarray, name: str) -> str:
    """Logs the pyfunc model (code file + mammo_core) and registers it; returns the version."""
    example = raw[:2]
    frame = predictor.frame(predictor.predict(example))
    # No input schema on purpose: MLflow's tensor spec enforces one dtype and rank, and
    # this model accepts uint8/uint16/int/float patches with or without a channel axis; it
    # checks its input itself and names what is wrong.
    with warnings.catch_warnings():  # a hint about missing values in integer *inputs*
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        signature = ModelSignature(inputs=None, outputs=_infer_schema(frame))
    with tempfile.TemporaryDirectory() as folder:
        paths = write_bundle(Path(folder), predictor)
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT, python_model=str(MODEL_CODE), artifacts=paths,
            code_paths=[str(PROJECT_ROOT / "mammo_core")], signature=signature,
            input_example=example, pip_requirements=runtime_requirements() + ["pandas"],
            registered_model_name=name,
            metadata={"input_shape": input_shape(predictor.experiment),
                      "input_dtypes": "uint8, uint16, integers (raw pixels), float in [0, 1]"})
    return str(info.registered_model_version)


def check_round_trip(name: str, version: str, raw: np.ndarray, expected: np.ndarray) -> None:
    """Loads the registered version back and checks it reproduces the in-process ensemble."""
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    got = probabilities_of(loaded.predict(raw))
    gap = float(np.max(np.abs(got - expected)))
    mlflow.log_metric("round_trip_max_abs_diff", gap)
    if gap > 1e-5:
        raise RuntimeError(f"{name} v{version} predicts differently after loading "
                           f"(max difference {gap:.2e})")


def promote(experiment: Experiment, name: str, version: str, auc: float,
            fingerprint: str) -> tuple[str, str]:
    """Gives `version` the champion alias if its cross-fitted hold-out AUC `auc` is at
    least the champion's, on the same hold-out (`fingerprint`); else challenger.

    Cross-fitted figures only: an in-sample figure (weights, calibration and threshold
    fitted on the very images) flatters every candidate by a different amount. Models whose
    hold-outs differ are not compared: the new version becomes challenger and the reason
    says why (move the alias by hand after comparing them on common data with
    `evaluate`). Returns (alias, reason); tags the version and the active run with the
    reason (mammo.promotion).
    """
    registry, client = experiment.registry, mlflow.MlflowClient()
    try:
        champion = client.get_model_version_by_alias(name, registry.champion_alias)
    except MlflowException:
        champion = None
    if champion is None:
        alias, reason = registry.champion_alias, f"first {registry.champion_alias} of {name}"
    else:
        alias, reason = gate(champion, auc, fingerprint, registry)
    client.set_registered_model_alias(name, alias, version)
    client.set_model_version_tag(name, version, "mammo.promotion", reason)
    mlflow.set_tags({"mammo.promotion": reason, "mammo.model_version": version,
                     "mammo.model_alias": alias})
    return alias, reason


def gate(champion, auc: float, fingerprint: str, registry) -> tuple[str, str]:
    """Returns (alias, reason) for a candidate against the current `champion` version."""
    theirs = champion.tags.get("mammo.holdout_auc_cross_fitted")
    refused = None
    if champion.tags.get("mammo.holdout_fingerprint") != fingerprint:
        refused = (f"v{champion.version} was scored on another hold-out (another fold plan "
                   "or data)")
    elif theirs is None:
        refused = f"v{champion.version} has no cross-fitted hold-out figure (registered earlier)"
    if refused:
        return registry.challenger_alias, (f"not compared with {registry.champion_alias} "
                                           f"v{champion.version}: {refused}; compare them on "
                                           "common data (evaluate) and move the alias by hand")
    promoted = auc >= float(theirs) - 1e-12  # the same figure, whatever its last bit
    return (registry.champion_alias if promoted else registry.challenger_alias,
            f"cross-fitted hold-out AUC {auc:.4f} {'>=' if promoted else '<'} {float(theirs):.4f} "
            f"of {registry.champion_alias} v{champion.version} on the same hold-out")


def search_config(search_run: str) -> Experiment:
    """Returns the experiment config a search logged (what its experts were trained with)."""
    try:
        run = mlflow.MlflowClient().get_run(search_run)
    except MlflowException as err:
        raise UsageError(f"no run '{search_run}' in the tracking store") from err
    if run.data.tags.get("mammo.kind") != "search" or run.info.status != "FINISHED":
        raise UsageError(f"run {search_run} is not a finished search (kind "
                         f"{run.data.tags.get('mammo.kind')}, status {run.info.status})")
    return experiment_from_dict(yaml.safe_load(download_text(search_run, "config/experiment.yaml")))


# what searches must share to pool their experts: the same images, read and preprocessed
# the same way, split by the same fold plan (the hold-out the weights are fitted on)
SHARED_SECTIONS = ("data", "preprocessing", "split", "cross_validation")


def combined_config(runs: list[str]) -> Experiment:
    """Returns the first search's config, after checking that every other search of
    `runs` has the same SHARED_SECTIONS; raises UsageError naming the two searches and
    the keys that differ."""
    configs = [search_config(run) for run in runs]
    first = configs[0].to_dict()
    for run, config in zip(runs[1:], configs[1:]):
        other = config.to_dict()
        differ = [f"{section}.{key}" for section in SHARED_SECTIONS
                  for key in sorted(set(first[section]) | set(other[section]))
                  if first[section].get(key) != other[section].get(key)]
        if differ:
            raise UsageError(f"search {run} cannot join search {runs[0]} in one ensemble: "
                             f"their {', '.join(differ)} differ (an ensemble needs the same "
                             "data, preprocessing and fold plan)")
    return configs[0]


def combined_plan(runs: list[str], dataset: Dataset) -> FoldPlan:
    """Returns the fold plan the searches share; raises UsageError naming a search whose
    logged plan was made for other data or puts an image in another part."""
    plans = []
    for run in runs:
        try:
            plans.append(load_fold_plan(run, dataset))
        except DataError as err:
            raise UsageError(f"search {run}: {err}") from err
    for run, plan in zip(runs[1:], plans[1:]):
        if not plan.same_parts(plans[0]):
            raise UsageError(f"search {run} cannot join search {runs[0]} in one ensemble: "
                             "their fold plans put images in different parts")
    return plans[0]


def load_experts(search_run: str, n_folds: int) -> list:
    """Returns the search's fold experts, ordered by fold."""
    by_fold = finished_fold_runs(search_run, n_folds)
    with warnings.catch_warnings():
        # The files also hold the trials' optimizer slots; an expert only predicts.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        return [mlflow.keras.load_model(f"runs:/{by_fold[k].info.run_id}/expert")
                for k in range(n_folds)]


def search_metrics(search_run: str) -> dict[str, float]:
    return {k: v for k, v in mlflow.get_run(search_run).data.metrics.items() if k.startswith("cv_")}


def holdout_fingerprint(dataset: Dataset, plan: FoldPlan) -> str:
    """Returns a hash of the data and the hold-out's members: equal means same images."""
    text = dataset.fingerprint() + ",".join(map(str, sorted(plan.holdout.tolist())))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


if __name__ == "__main__":
    sys.exit(main())
