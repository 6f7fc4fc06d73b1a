"""A registered model on its ensemble hold-out under controlled acquisition shifts.

    python benchmarks/shift_bench.py [--model-uri models:/mammo-microcal@champion]
        [--config experiments/microcal.yaml]

The hold-out is the one of the search the model version came from (its `mammo.search_run`
tag): images no expert trained on. Each shift of `mammo_core.shift.STANDARD_SHIFTS` (and
the issue's combined contrast x1.5 + brightness +0.05) is applied to the raw [0, 1]
patches, which the registered pyfunc scores as any caller would. Per shift: AUC,
sensitivity, specificity and balanced accuracy at the model's own threshold, and the
expected calibration error. Logged as an MLflow run (kind `shift`: metrics
`<shift>_<metric>`, `shift/table.csv`, `figures/shift.png`); prints a markdown table.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mammo_core import metrics  # noqa: E402
from mammo_core.shift import STANDARD_SHIFTS, Shift, combined  # noqa: E402
from mammo_core.tracking import log_figure, registry_reference, tracked_run, use_tracking_store  # noqa: E402
from tune.project import PROJECT_ROOT, load_config, load_data, load_fold_plan  # noqa: E402

SHIFTS = [(s.name, (s,)) for s in STANDARD_SHIFTS] + [
    ("contrast 1.5 + brightness +0.05", (Shift("contrast", 1.5), Shift("brightness", 0.05)))]
COLUMNS = ("auc", "sensitivity", "specificity", "balanced_accuracy", "ece")


def shift_probabilities(model, raw: np.ndarray) -> dict[str, np.ndarray]:
    """Returns the model's probability per image under each shift, by shift name."""
    return {name: model.predict(combined(raw, shifts, seed=0))["probability"].to_numpy()
            for name, shifts in SHIFTS}


def score_shifts(probabilities: dict[str, np.ndarray], labels: np.ndarray,
                 threshold: float) -> pd.DataFrame:
    """Returns one row per shift with the metrics at the model's threshold."""
    rows = []
    for name, p in probabilities.items():
        m = metrics.binary_metrics(labels, p, threshold)
        rows.append({"shift": name, "auc": m["auc"], "sensitivity": m["sensitivity"],
                     "specificity": m["specificity"],
                     "balanced_accuracy": metrics.balanced_accuracy(m),
                     "ece": metrics.expected_calibration_error(labels, p)})
    return pd.DataFrame(rows)


def threshold_table(probabilities: dict[str, np.ndarray], labels: np.ndarray,
                    thresholds: list[float]) -> pd.DataFrame:
    """Returns balanced accuracy per shift (rows) at each of `thresholds` (columns): what
    moving the operating point, instead of the model, would trade."""
    return pd.DataFrame({f"{t:g}": [metrics.balanced_accuracy(metrics.binary_metrics(labels, p, t))
                                    for p in probabilities.values()]
                         for t in thresholds}, index=list(probabilities))


def markdown(table: pd.DataFrame) -> str:
    """Returns `table` (rows named by shift) as a Markdown table, values to 3 decimals."""
    lines = ["| shift | " + " | ".join(table.columns) + " |", "|---" * (table.shape[1] + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{v:.3f}" for v in row) + " |"
              for name, row in table.iterrows()]
    return "\n".join(lines)


def shift_figure(table: pd.DataFrame, title: str):
    """Returns balanced accuracy, AUC and ECE per shift, one bar group per shift."""
    fig, ax = plt.subplots(figsize=(10, 4))
    x = np.arange(len(table))
    for k, column in enumerate(("auc", "balanced_accuracy", "ece")):
        ax.bar(x + (k - 1) * 0.27, table[column], width=0.27, label=column)
    ax.set(xticks=x, ylim=(0, 1.05), title=title)
    ax.set_xticklabels(table["shift"], rotation=45, ha="right", fontsize=8)
    ax.axhline(0.9, color="grey", ls=":", lw=1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/microcal.yaml")
    parser.add_argument("--model-uri", default="")
    parser.add_argument("--thresholds", type=float, nargs="*", default=[],
                        help="also print balanced accuracy per shift at these thresholds")
    args = parser.parse_args()
    experiment, _ = load_config(args.config)
    use_tracking_store(PROJECT_ROOT)
    uri = args.model_uri or f"models:/{experiment.tracking.registered_model_name}@champion"
    ref = registry_reference(uri)
    version = mlflow.MlflowClient().get_model_version(ref["name"], ref["version"])
    search_run = version.tags["mammo.search_run"]
    dataset, _ = load_data(experiment, "")
    holdout = load_fold_plan(search_run, dataset).holdout
    model = mlflow.pyfunc.load_model(f"models:/{ref['name']}/{ref['version']}")
    threshold = model.unwrap_python_model().predictor.ensemble.threshold
    raw, labels = dataset.images[holdout], dataset.labels[holdout]
    probabilities = shift_probabilities(model, raw)
    table = score_shifts(probabilities, labels, threshold)
    with tracked_run(experiment.tracking.experiment_name, f"shift-v{ref['version']}",
                     tags={"mammo.kind": "shift", "mammo.model_uri": uri}):
        mlflow.log_params({"model_version": ref["version"], "search_run": search_run,
                           "holdout_images": len(holdout), "threshold": f"{threshold:.6f}"})
        for row in table.to_dict("records"):
            key = re.sub(r"[^a-z0-9.]+", "_", row["shift"].lower()).strip("_")
            mlflow.log_metrics({f"{key}_{c}": row[c] for c in COLUMNS})
        mlflow.log_text(table.to_csv(index=False), "shift/table.csv")
        log_figure(shift_figure(table, f"{uri} (v{ref['version']}) on its hold-out "
                                f"({len(holdout)} images), threshold {threshold:.3f}"),
                   "figures/shift.png")
    print(f"{uri} = v{ref['version']}, hold-out of search {search_run}: {len(holdout)} images, "
          f"threshold {threshold:.4f}\n")
    print(markdown(table.set_index("shift")[list(COLUMNS)]))
    if args.thresholds:
        moved = threshold_table(probabilities, labels, [threshold, *args.thresholds])
        print("\nbalanced accuracy at other thresholds (the first column is the model's own)\n")
        print(markdown(moved))


if __name__ == "__main__":
    main()
