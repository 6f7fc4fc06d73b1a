"""The model card: what a registered ensemble is, how it was measured, what it is not for.

Rendered as Markdown, the format of a registry version's description in the MLflow UI.
Modelled on MONAI bundle metadata: input spec, value range, labels, metrics, intended use.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from mammo_core.config import Experiment

INTENDED_USE = ("Research only; not for diagnosis. Scores 60x60 mammogram patches as normal "
                "tissue or microcalcification cluster, to compare models and study errors. It "
                "has not been validated on other scanners, sites or populations.")


@dataclass(frozen=True)
class CardFacts:
    """Everything a card states; plain values gathered by the registry step."""

    model_name: str
    version: str
    experiment: Experiment
    data_fingerprint: str
    data_counts: Mapping[str, int]      # class name -> images
    holdout_images: int
    holdout_groups: int
    search_run: str
    git_commit: str
    cv: Mapping[str, float]             # cv_<metric>_mean / _std from the search run
    holdout: Mapping[str, Mapping[str, float]]  # method -> cross-fitted hold-out metrics
    weights: tuple[float, ...]
    threshold: float
    bit_depth: int


def render_card(facts: CardFacts) -> str:
    """Returns the model card as Markdown."""
    e = facts.experiment
    return "\n".join([
        f"# {facts.model_name} v{facts.version}",
        "", f"**Intended use.** {INTENDED_USE}", "",
        *_data_section(facts), "", *_training_section(facts), "",
        *_metrics_section(facts), "", *_input_section(facts), "",
        "## Provenance",
        f"- search run `{facts.search_run}`, git commit `{facts.git_commit}`, "
        f"config `{e.name}` (hash `{e.fingerprint()}`)", ""])


def _data_section(facts: CardFacts) -> list[str]:
    counts = ", ".join(f"{n} {name}" for name, n in facts.data_counts.items())
    split = facts.experiment.split
    return ["## Data",
            f"- microcalcification patches, fingerprint `{facts.data_fingerprint}`: {counts}",
            f"- fold plan grouped by `{split.group_by}` (duplicates always joined), seed "
            f"{split.seed}; ensemble hold-out: {facts.holdout_images} images in "
            f"{facts.holdout_groups} groups, seen by no expert"]


def _training_section(facts: CardFacts) -> list[str]:
    e = facts.experiment
    weights = ", ".join(f"fold {k}: {w:.3f}" for k, w in enumerate(facts.weights))
    rule = e.registry.threshold
    return ["## Training",
            f"- {e.cross_validation.n_folds} fold experts, each the best of a Ray Tune search "
            f"({e.search.searcher}, {e.search.trials_per_fold} trials per fold, up to "
            f"{e.search.max_epochs} epochs, ASHA on validation AUC)",
            f"- ensemble weights fitted on the hold-out (log loss, non-negative, sum 1): "
            f"{weights}",
            f"- decision threshold {facts.threshold:.4f} (rule: `{rule}`)"]


def _metrics_section(facts: CardFacts) -> list[str]:
    cv = facts.cv
    names = ("auc", "accuracy", "sensitivity", "specificity", "f1", "f2")
    lines = ["## Metrics",
             "Outer test folds of the search (each expert on images it never saw): " + ", ".join(
                 f"{n} {cv[f'cv_test_{n}_mean']:.3f} ± {cv[f'cv_test_{n}_std']:.3f}"
                 for n in names if f"cv_test_{n}_mean" in cv) + ".", "",
             "Ensemble hold-out, cross-fitted (weights and threshold scored on parts of the "
             "hold-out they were not fitted on):", "",
             "| method | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for method, scores in facts.holdout.items():
        lines.append(f"| {method} | " + " | ".join(f"{scores[n]:.3f}" for n in names) + " |")
    return lines


def _input_section(facts: CardFacts) -> list[str]:
    e = facts.experiment
    rows, cols = e.data.image_size
    wavelet = e.preprocessing.wavelet
    steps = ["scaling to [0, 1]"]
    if e.preprocessing.clahe.enabled:
        steps.append("CLAHE")
    if wavelet.enabled:
        steps.append(f"wavelet filter ({wavelet.family}, level {wavelet.level}, "
                     f"k = {wavelet.threshold_k})")
    labels = ", ".join(f"{k} = {v}" for k, v in sorted(e.data.class_names.items()))
    return ["## Input and output",
            f"- input: patches shaped (N, {rows}, {cols}) or (N, {rows}, {cols}, 1); uint8 and "
            f"uint16 are scaled by their full range, other integers are raw "
            f"{facts.bit_depth}-bit pixels, floats must already lie in [0, 1]",
            f"- preprocessing inside the model: {', '.join(steps)}",
            f"- output per patch: `probability`, `label` ({labels}), `expert_0` ... "
            f"`expert_{len(facts.weights) - 1}`",
            f"- explanations: Grad-CAM, Deep SHAP against {e.explanations.background_size} "
            f"preprocessed training patches per expert (stored in the model as "
            f"`background.npz`), partition SHAP; see the register run's "
            f"`figures/explanations/`"]
