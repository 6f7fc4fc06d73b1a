"""Model families on the microcalcification study: grouped 5-fold CV test AUC, same folds,
same training budget, next to the brightness baselines measured on the same test parts.

    python benchmarks/families_bench.py [--epochs 20] [--patience 6]
        [--families hypermodel microcal_hypermodel microcal_cnn mass_calc_m5 vgg16]
        [--vgg-cut top]

Each family is trained once per outer fold at a fixed configuration (the hypermodel and
document 000's hypermodel at the config's `hyperparameters` point, the others at their
published design) with its published recipe's optimizer, learning rate and batch size
(mammo_core/recipe.py), on the fold's train part, under one budget for all: at most
--epochs epochs, early stopping on the inner validation AUC after --patience epochs (best
weights kept); then scored once on the fold's test part. No family is searched here, so
the hypermodel rows are fixed points, not searched results (see search_bench.py). vgg16
starts from random weights, all trained: no ImageNet file can be downloaded here.

Prints a markdown table for docs/benchmarks.md and writes benchmarks/results/families.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mammo_core import metrics  # noqa: E402
from mammo_core.config import BackboneConfig  # noqa: E402
from mammo_core.families import build_model, count_params, recipe_for  # noqa: E402
from mammo_core.folds import make_fold_plan  # noqa: E402
from mammo_core.preprocessing import preprocess  # noqa: E402
from mammo_core.training import fit, limit_tensorflow_threads, predict_proba, set_seed  # noqa: E402
from tune.evaluation import baseline_aucs  # noqa: E402
from tune.project import load_config, load_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FAMILIES = ("hypermodel", "microcal_hypermodel", "microcal_cnn", "mass_calc_m5",
                    "vgg16")
SEARCHED = ("hypermodel", "microcal_hypermodel")  # trained at the config's fixed point


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def run_family(family: str, experiment, images, labels, plan, args) -> dict:
    """Returns per-fold test AUCs and accuracies (threshold 0.5), wall seconds, weights,
    the recipe and median seconds per epoch."""
    model_config = experiment.model.replace(family=family, backbone=BackboneConfig(
        weights=None, cut=args.vgg_cut, trainable_layers=None, pooling="avg", head_units=64))
    # one budget for every family; the optimizer and batch size stay each family's own
    training = experiment.training.replace(epochs=args.epochs, batch_size=None,
                                           early_stopping_patience=args.patience,
                                           monitor="val_auc")
    # the published designs keep their own dropout and learning rate
    hyperparameters = ({k: v for k, v in experiment.hyperparameters.items()
                        if family == "hypermodel" or k != "learning_rate"}
                       if family in SEARCHED else {})
    recipe = recipe_for(hyperparameters, model_config, training)
    aucs, accuracies, epoch_times, epochs, started = [], [], [], [], time.monotonic()
    for fold in plan.folds:
        set_seed(fold.index)
        model = build_model(hyperparameters, images.shape[1:], model_config, seed=fold.index)
        timer = EpochTimer()
        history = fit(model, (images[fold.train], labels[fold.train]),
                      (images[fold.val], labels[fold.val]), training, recipe, callbacks=[timer],
                      stream=None)
        scores = metrics.binary_metrics(labels[fold.test], predict_proba(model, images[fold.test]))
        aucs.append(scores["auc"])
        accuracies.append(scores["accuracy"])
        epoch_times += timer.times[1:]  # the first epoch traces the graph
        epochs.append(len(history.history["loss"]))
        print(f"  {family} fold {fold.index + 1}/{len(plan.folds)}: test AUC {aucs[-1]:.3f} "
              f"after {epochs[-1]} epochs ({time.monotonic() - started:.0f} s so far)",
              flush=True)
    return {"auc": aucs, "accuracy": accuracies, "seconds": time.monotonic() - started,
            "params": count_params(model),
            "recipe": f"{recipe.optimizer} {recipe.learning_rate:g}, batch {recipe.batch_size}",
            "seconds_per_epoch": float(np.median(epoch_times)), "epochs": epochs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/microcal.yaml")
    parser.add_argument("--families", nargs="+", default=list(DEFAULT_FAMILIES))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=6)
    parser.add_argument("--vgg-cut", default="top", help="vgg16 cut level (top, top+1, ...)")
    args = parser.parse_args()
    limit_tensorflow_threads(2)
    experiment, _ = load_config(args.config)
    dataset, _ = load_data(experiment, "")
    plan = make_fold_plan(dataset, experiment.split, experiment.cross_validation)
    images = preprocess(dataset.images, experiment.preprocessing)
    results = {}
    for family in args.families:
        print(f"{family}: {len(plan.folds)} folds, at most {args.epochs} epochs each", flush=True)
        results[family] = run_family(family, experiment, images, dataset.labels, plan, args)
    baselines = [baseline_aucs(dataset, {"train": f.train, "val": f.val, "test": f.test})
                 for f in plan.folds]
    for key, name in (("baseline_logreg_test_auc", "brightness logistic regression"),
                      ("baseline_max_pixel_test_auc", "max pixel")):
        results[name] = {"auc": [b[key] for b in baselines]}
    print_table(results, args)
    out = ROOT / "benchmarks" / "results" / "families.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


def print_table(results: dict, args) -> None:
    print("\n| model | CV test AUC (5 folds, grouped by case) | per fold | weights | recipe | "
          "s / epoch | epochs run | wall |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in sorted(results.items(), key=lambda item: -np.mean(item[1]["auc"])):
        auc = np.asarray(row["auc"])
        extra = (f"{row['params']:,} | {row['recipe']} | {row['seconds_per_epoch']:.2f} | "
                 f"{'/'.join(map(str, row['epochs']))} | {row['seconds'] / 60:.1f} min"
                 if "params" in row else "— | — | — | — | —")
        print(f"| {name} | {auc.mean():.3f} ± {auc.std(ddof=1):.3f} | "
              f"{' '.join(f'{a:.3f}' for a in auc)} | {extra} |")
    print(f"\nbudget: at most {args.epochs} epochs, early stopping patience {args.patience} on "
          f"inner validation AUC; vgg16 cut {args.vgg_cut}, random init, all trained, "
          "pooled head of 64")


if __name__ == "__main__":
    main()
