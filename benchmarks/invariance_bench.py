"""Which preprocessing keeps the operating point under a scanner shift: measured, per fold.

    python benchmarks/invariance_bench.py [--epochs 20] [--patience 6]
        [--variants none after before contrast_aug]

For each variant the hypermodel (the config's fixed point) is trained once per outer fold
of the default fold plan on clean patches, with early stopping on the clean inner
validation AUC; its threshold is the Youden point on that clean validation part (as the
registry picks one on clean data). The fold's test part is then scored clean and under
the issue's shifts (contrast x1.5 around each patch's mean plus brightness +0.05, and
contrast x2.0): AUC and balanced accuracy at that threshold. Variants:

- none: today's preprocessing (wavelet filter on intensities);
- before / after: per-patch standardisation before / after the wavelet filter;
- robust: per-patch median / MAD scaling before the wavelet filter;
- noise: each patch minus its median, in units of its own noise level, before the filter;
- contrast_off / contrast_0.1 / contrast_aug / contrast_aug_wide: training-only contrast
  augmentation with factors 1 / 0.9 - 1.1 / 0.5 - 1.5 / 0.2 - 1.8 (augmentation.contrast
  0 / 0.1 / 0.5 / 0.8);
- contrast_log_2 / contrast_log_2.5: factors 1/2 - 2 / 1/2.5 - 2.5, uniform in log scale
  (augmentation.contrast 1.0 / 1.5, contrast_scale log_uniform);
- a+b: both (noise+contrast_off).

Balanced accuracy is reported at that Youden threshold and at 0.5.

Prints a markdown table and writes benchmarks/results/invariance.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mammo_core import metrics  # noqa: E402
from mammo_core.config import RegistryConfig  # noqa: E402
from mammo_core.ensemble import choose_threshold  # noqa: E402
from mammo_core.families import build_model, recipe_for  # noqa: E402
from mammo_core.folds import make_fold_plan  # noqa: E402
from mammo_core.preprocessing import preprocess  # noqa: E402
from mammo_core.shift import Shift, combined  # noqa: E402
from mammo_core.training import fit, limit_tensorflow_threads, predict_proba, set_seed  # noqa: E402
from tune.project import load_config, load_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONTRAST_AUGMENTATION = {"contrast_off": (0.0, "uniform"), "contrast_0.1": (0.1, "uniform"),
                         "contrast_aug": (0.5, "uniform"), "contrast_aug_wide": (0.8, "uniform"),
                         "contrast_log_2": (1.0, "log_uniform"),
                         "contrast_log_2.5": (1.5, "log_uniform")}
SHIFTS = {"clean": (), "contrast 1.5 + brightness 0.05": (Shift("contrast", 1.5),
                                                          Shift("brightness", 0.05)),
          "contrast 2.0": (Shift("contrast", 2.0),)}


def variant_experiment(experiment, name: str):
    """Returns the experiment with the variant's preprocessing / augmentation; `a+b`
    applies both."""
    if "+" in name:
        for part in name.split("+"):
            experiment = variant_experiment(experiment, part)
        return experiment
    if name in ("before", "after", "robust", "noise"):
        return experiment.replace(preprocessing=experiment.preprocessing.replace(standardize=name))
    if name in CONTRAST_AUGMENTATION:
        model, (factor, scale) = experiment.model, CONTRAST_AUGMENTATION[name]
        return experiment.replace(model=model.replace(augmentation=model.augmentation.replace(
            contrast=factor, contrast_scale=scale)))
    if name != "none":
        raise SystemExit(f"unknown variant {name!r}")
    return experiment


def run_variant(experiment, raw: np.ndarray, labels: np.ndarray, plan, args) -> dict:
    """Returns {shift: {"auc": [per fold], "balanced_accuracy": [per fold]}}."""
    training = experiment.training.replace(epochs=args.epochs,
                                           early_stopping_patience=args.patience)
    shifted = {name: preprocess(combined(raw, shifts), experiment.preprocessing)
               for name, shifts in SHIFTS.items()}
    out = {name: {"auc": [], "balanced_accuracy": [], "balanced_accuracy_at_half": []}
           for name in SHIFTS}
    for fold in plan.folds:
        set_seed(fold.index)
        images = shifted["clean"]
        model = build_model(experiment.hyperparameters, images.shape[1:], experiment.model,
                            seed=fold.index)
        fit(model, (images[fold.train], labels[fold.train]),
            (images[fold.val], labels[fold.val]), training,
            recipe_for(experiment.hyperparameters, experiment.model, training), stream=None)
        threshold = choose_threshold(labels[fold.val], predict_proba(model, images[fold.val]),
                                     RegistryConfig(threshold="youden"))
        for name, shifted_images in shifted.items():
            p = predict_proba(model, shifted_images[fold.test])
            m = metrics.binary_metrics(labels[fold.test], p, threshold)
            out[name]["auc"].append(m["auc"])
            out[name]["balanced_accuracy"].append(metrics.balanced_accuracy(m))
            out[name]["balanced_accuracy_at_half"].append(metrics.balanced_accuracy(
                metrics.binary_metrics(labels[fold.test], p, 0.5)))
        print(f"  fold {fold.index + 1}: " + ", ".join(
            f"{n} AUC {out[n]['auc'][-1]:.3f} bal.acc {out[n]['balanced_accuracy'][-1]:.3f}"
            f" (at 0.5: {out[n]['balanced_accuracy_at_half'][-1]:.3f})"
            for n in SHIFTS), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/microcal.yaml")
    parser.add_argument("--variants", nargs="+", default=["none", "after", "before",
                                                          "contrast_aug"])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=6)
    args = parser.parse_args()
    limit_tensorflow_threads(2)
    experiment, _ = load_config(args.config)
    dataset, _ = load_data(experiment, "")
    plan = make_fold_plan(dataset, experiment.split, experiment.cross_validation)
    results, started = {}, time.monotonic()
    for name in args.variants:
        print(f"{name}:", flush=True)
        results[name] = run_variant(variant_experiment(experiment, name), dataset.images,
                                    dataset.labels, plan, args)
    print(f"\n{(time.monotonic() - started) / 60:.1f} min\n")
    columns = ("auc", "balanced_accuracy", "balanced_accuracy_at_half")
    print("| variant | " + " | ".join(f"{s}: AUC | {s}: bal. acc. | {s}: bal. acc. at 0.5"
                                     for s in SHIFTS) + " |")
    print("|---" * (1 + len(columns) * len(SHIFTS)) + "|")
    for name, row in results.items():
        cells = [f"{np.mean(row[s][m]):.3f} ± {np.std(row[s][m], ddof=1):.3f}"
                 for s in SHIFTS for m in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")
    out = ROOT / "benchmarks" / "results" / "invariance.json"
    out = out.with_name(f"invariance-{'-'.join(args.variants)}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
