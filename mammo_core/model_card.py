"""The model card: what a registered ensemble is, how it was measured, what it is not for.

Rendered as Markdown, the format of a registry version's description in the MLflow UI.
Modelled on MONAI bundle metadata: input spec, value range, labels, metrics, intended use.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from mammo_core.config import Experiment
from mammo_core.recipe import resolve

INTENDED_USE = ("Research only; not for diagnosis. Scores {rows}x{cols} mammogram images "
                "of the `{task}` task as {classes}, to compare models and study errors. It "
                "has not been validated on other scanners, sites or populations.")
BINARY_METRICS = ("auc", "accuracy", "sensitivity", "specificity", "f1", "f2")
MULTICLASS_METRICS = ("auc", "accuracy", "balanced_accuracy")


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
    method: str = "learned"  # the registered ensemble (registry.method)
    method_reason: str = ""
    threshold_interval: tuple[float, float] | None = None  # 90 % bootstrap, hold-out
    calibration: Mapping[str, float] | None = None  # Platt slope / intercept
    site: str = ""  # set by a site recalibration
    # the training patches' intensity summary (IntensityReference.summary["all"])
    intensity: Mapping[str, float] | None = None


def render_card(facts: CardFacts) -> str:
    """Returns the model card as Markdown."""
    e = facts.experiment
    rows, cols = e.data.image_size
    use = INTENDED_USE.format(rows=rows, cols=cols, task=e.name,
                              classes=" / ".join(e.data.label_names))
    return "\n".join([
        f"# {facts.model_name} v{facts.version}",
        "", f"**Intended use.** {use}", "",
        *_data_section(facts), "", *_training_section(facts), "",
        *_metrics_section(facts), "", *_input_section(facts), "",
        "## Provenance",
        f"- search run `{facts.search_run}`, git commit `{facts.git_commit}`, "
        f"config `{e.name}` (hash `{e.fingerprint()}`)", ""])


def _data_section(facts: CardFacts) -> list[str]:
    counts = ", ".join(f"{n} {name}" for name, n in facts.data_counts.items())
    split = facts.experiment.split
    return ["## Data",
            f"- `{facts.experiment.data.collection}` images ({facts.experiment.data.layout} "
            f"layout), fingerprint `{facts.data_fingerprint}`: {counts}",
            f"- fold plan grouped by `{split.group_by}` (duplicates always joined), seed "
            f"{split.seed}; ensemble hold-out: {facts.holdout_images} images in "
            f"{facts.holdout_groups} groups, seen by no expert",
            f"- protocol `{split.protocol}`: " + (
                "every expert scored on the collection's own test partition, hold-out and "
                "validation drawn from its training partition; the run's "
                "`published_test_images_sharing_*` metrics count the cases, ROIs and pixels "
                "the two sides share" if split.protocol == "published" else
                "outer test folds grouped like every other part")]


def _training_section(facts: CardFacts) -> list[str]:
    e = facts.experiment
    weights = ", ".join(f"fold {k}: {w:.3f}" for k, w in enumerate(facts.weights))
    rule = e.registry.threshold
    searches = facts.search_run.split(",")
    lines = ["## Training",
             f"- {e.cross_validation.n_folds} fold experts, each the best of a Ray Tune search "
             f"({e.search.searcher}, {e.search.trials_per_fold} trials per fold, up to "
             f"{e.search.max_epochs} epochs, ASHA on validation AUC)" if len(searches) == 1 else
             f"- {len(facts.weights)} experts: the {e.cross_validation.n_folds} fold experts of "
             f"each of {len(searches)} searches on one fold plan ("
             + ", ".join(f"`{run}`" for run in searches) + "; families per expert: the "
             "register run's `expert.<k>.family` params)",
             (f"- families searched: {', '.join(e.search_space['family'].values)}"
              if "family" in e.search_space else
              f"- family `{e.model.family}`, recipe: {_recipe_text(e)}"),
             f"- ensemble `{facts.method}`, weights fitted on the hold-out: {weights}"
             + (f" ({facts.method_reason})" if facts.method_reason else "")]
    if facts.calibration and facts.calibration != {"slope": 1.0, "intercept": 0.0}:
        lines.append(f"- probability calibrated by Platt scaling on the hold-out: slope "
                     f"{facts.calibration['slope']:.3f}, intercept "
                     f"{facts.calibration['intercept']:.3f}")
    if e.data.n_classes > 2:
        return lines + ["- label: the class of highest ensemble probability"]
    interval = (f", 90 % bootstrap interval {facts.threshold_interval[0]:.4f} – "
                f"{facts.threshold_interval[1]:.4f} over resamples of the hold-out"
                if facts.threshold_interval else "")
    lines.append(f"- decision threshold {facts.threshold:.4f} (rule: `{rule}`{interval})")
    if facts.site:
        lines.append(f"- **recalibrated for site `{facts.site}`**: calibration and threshold "
                     "refitted on that site's labelled sample; the experts are unchanged")
    return lines


def _recipe_text(e) -> str:
    """Returns the training recipe the config's family resolves to, in words."""
    recipe = resolve(e.model.family, e.hyperparameters, e.model.optimizer, e.training)
    stop = recipe.early_stopping
    return (f"{recipe.optimizer} {recipe.learning_rate:g}"
            + (f", decay {recipe.decay:g}" if recipe.decay else "")
            + f", batch {recipe.batch_size}, "
            + (f"early stopping on {stop.monitor} (patience {stop.patience})" if stop
               else "no early stopping"))


def _metrics_section(facts: CardFacts) -> list[str]:
    cv = facts.cv
    several = facts.experiment.data.n_classes > 2
    names = MULTICLASS_METRICS if several else BINARY_METRICS
    lines = ["## Metrics",
             "Outer test folds of the search (each expert on images it never saw): " + ", ".join(
                 f"{n} {cv[f'cv_test_{n}_mean']:.3f} ± {cv[f'cv_test_{n}_std']:.3f}"
                 for n in names if f"cv_test_{n}_mean" in cv) + ".", "",
             "Ensemble hold-out, cross-fitted (weights and threshold scored on parts of the "
             "hold-out they were not fitted on):", "",
             "| method | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for method, scores in facts.holdout.items():
        lines.append(f"| {method} | " + " | ".join(f"{scores[n]:.3f}" for n in names) + " |")
    return lines + (_per_class_lines(facts) if several else [])


def _per_class_lines(facts: CardFacts) -> list[str]:
    """Returns the per-class table: recall and one-vs-rest AUC of each method on the hold-out."""
    lines = ["", "Per class (hold-out, cross-fitted; recall / one-vs-rest AUC):", "",
             "| class | " + " | ".join(facts.holdout) + " |", "|---" * (len(facts.holdout) + 1) + "|"]
    for k, name in enumerate(facts.experiment.data.label_names):
        cells = [f"{s.get(f'recall_{k}', float('nan')):.3f} / {s.get(f'auc_{k}', float('nan')):.3f}"
                 for s in facts.holdout.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def input_shape(experiment: Experiment) -> str:
    """Returns the input a model of this experiment takes, in words."""
    rows, cols = experiment.data.image_size
    if experiment.data.pairs:
        return (f"(baseline, abnormal) pairs of patches shaped (N, 2, {rows}, {cols}) or "
                f"(N, 2, {rows}, {cols}, 1)")
    return f"patches shaped (N, {rows}, {cols}) or (N, {rows}, {cols}, 1)"


def _input_section(facts: CardFacts) -> list[str]:
    e = facts.experiment
    wavelet = e.preprocessing.wavelet
    steps = ["scaling to [0, 1]"]
    if e.preprocessing.clahe.enabled:
        steps.append("CLAHE")
    if wavelet.enabled:
        steps.append(f"wavelet filter ({wavelet.family}, level {wavelet.level}, "
                     f"k = {wavelet.threshold_k})")
    labels = ", ".join(f"{k} = {v}" for k, v in enumerate(e.data.label_names))
    output = (f"`probability`, `label` ({labels}), `expert_0` ... `expert_{len(facts.weights) - 1}`"
              if e.data.n_classes == 2 else
              f"`probability.<class>` per class, `label` ({labels}: the most probable), "
              f"`expert_<k>.<class>`")
    return ["## Input and output",
            f"- input: {input_shape(e)}; uint8 and "
            f"uint16 are scaled by their full range, other integers are raw "
            f"{facts.bit_depth}-bit pixels, floats must already lie in [0, 1]",
            f"- preprocessing inside the model: {', '.join(steps)}",
            f"- output per image: {output}",
            f"- explanations: Grad-CAM, Deep SHAP against {e.explanations.background_size} "
            f"preprocessed training patches per expert (stored in the model as "
            f"`background.npz`), partition SHAP; see the register run's "
            f"`figures/explanations/`" if e.data.n_classes == 2 else
            "- explanations: none yet for models of several classes",
            *_intensity_lines(facts.intensity)]


def _intensity_lines(summary: Mapping[str, float] | None) -> list[str]:
    if not summary:
        return []
    return [f"- training intensities (the reference `adapt` maps a new site onto; "
            f"`intensity_reference.json`): {summary['patches']} patches, median IQR "
            f"{summary['iqr_median']:.4f} (5-95 %: {summary['iqr_p05']:.4f}-"
            f"{summary['iqr_p95']:.4f}), median mean {summary['mean_median']:.3f} "
            f"({summary['mean_p05']:.3f}-{summary['mean_p95']:.3f})"]
