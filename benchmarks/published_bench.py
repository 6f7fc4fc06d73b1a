"""Published figures beside their reproduction: each document's system under the
published protocol and under the project's grouped one, on the same data in one run.

    python benchmarks/published_bench.py [--epochs 20] [--patience 6]

On microcal (documents 000 and 001) both columns are measured here: document 000's
hypermodel (at experiments/published/microcal_000.yaml's fixed point) and document 001's
CNN, each trained once per fold with its published recipe (mammo_core/recipe.py) under
one budget (at most --epochs epochs, early stopping on the inner validation AUC after
--patience), then scored on the fold's test part:

- published protocol, each document's own (its config's `split`): 000 image-level 5-fold
  cross-validation (group_by none); 001 its own Train/Test partition, which the shared
  folders do not ship, so the image-level 20 % test share the publication drew
  (split.published_test_fraction 0.2, stratified), every expert scored on that one test
  side. What the (first) test side shares with the training side is counted in the run;
- grouped protocol: the project's default fold plan (5 outer folds grouped by case,
  duplicates joined), each expert scored on its own fold's test part.

The other documents' collections are not on these machines: their rows quote the figure
and say "needs the data". Prints the markdown table for docs/benchmarks.md and writes
benchmarks/results/published.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from families_bench import run_family  # noqa: E402

from mammo_core.config import SplitConfig  # noqa: E402
from mammo_core.folds import leak_line, make_fold_plan, published_leaks  # noqa: E402
from mammo_core.preprocessing import preprocess  # noqa: E402
from mammo_core.training import limit_tensorflow_threads  # noqa: E402
from tune.project import load_config, load_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# measured here: document -> (config, family)
MEASURED = {"000": ("experiments/published/microcal_000.yaml", "microcal_hypermodel"),
            "001": ("experiments/published/microcal_001.yaml", "microcal_cnn")}
# as published: (document, system, figure, the document's protocol, the config here)
QUOTED = [
    ("000", "hypermodel, 5-fold CV + ensemble", "none printed (its Performances section is "
     "empty)", "image-level K-fold, 25 % internal hold-out", "published/microcal_000"),
    ("001", "CNN (568,449 weights)", "none printed (its result tables are empty)",
     "its own Train/Test partition (636 / 161), 20 % of Train for validation",
     "published/microcal_001"),
    ("002", "M0 … M5 (mass vs calcification)", "test accuracy 0.729, 0.783, 0.816, 0.830, "
     "0.827, 0.842 (validation 0.774 … 0.888)", "CBIS-DDSM's train/test partition",
     "published/cbis_mass_calc_m0 … m5"),
    ("003", "scratch CNN, mass vs calcification (SCRATCH_6)", "accuracy 0.87, AUC 0.87",
     "NumPy release's test files, 20 % of train for validation",
     "published/cbis_scratch_mass_vs_calc"),
    ("003", "scratch CNN, benign vs malignant (SCRATCH_BM_V6)", "accuracy 0.65, F2 0.61, "
     "AUC 0.65", "same", "published/cbis_scratch_benign_vs_malignant"),
    ("003", "VGG16, mass vs calcification (VGG16_V5)", "accuracy 0.83, AUC 0.82", "same",
     "published/cbis_vgg16_mass_vs_calc"),
    ("003", "InceptionV3, mass vs calcification (INCEPTION_5)", "accuracy 0.86, AUC 0.87",
     "same", "published/cbis_inception_mass_vs_calc"),
    ("003", "VGG16, benign vs malignant (BEST VGG)", "accuracy 0.648, F2 0.68, AUC 0.67",
     "same", "published/cbis_vgg16_benign_vs_malignant"),
    ("003", "InceptionV3, benign vs malignant (BEST INCEPTION)", "accuracy 0.69, F2 0.69, "
     "AUC 0.70", "same", "published/cbis_inception_benign_vs_malignant"),
    ("003", "Siamese, mass vs calcification (SIAMESE_5)", "accuracy 0.84, AUC 0.83", "same",
     "published/cbis_siamese_mass_vs_calc"),
    ("003", "average of scratch, VGG16, InceptionV3 (benign vs malignant)", "accuracy 0.71, "
     "F2 0.68, AUC 0.71", "same", "—"),
    ("004", "MIAS CNN (117,505 weights)", "test accuracy 0.960 (validation 0.961)",
     "random split after 180 rotated copies of every image: copies of one mammogram on "
     "both sides", "published/mias_normal_vs_abnormal"),
]


def measure(document: str, protocol: str, args) -> dict:
    """Returns the document's system trained and scored under `protocol` (run_family's
    figures), with the leak counts of the published plan."""
    config, family = MEASURED[document]
    experiment, _ = load_config(config)  # its document's split
    if protocol == "grouped":
        experiment = experiment.replace(split=SplitConfig(seed=experiment.split.seed))
    dataset, _ = load_data(experiment, "")
    plan = make_fold_plan(dataset, experiment.split, experiment.cross_validation)
    images = preprocess(dataset.images, experiment.preprocessing)
    print(f"{document} {family}, {protocol} protocol: {len(plan.folds)} folds", flush=True)
    result = run_family(family, experiment, images, dataset.labels, plan, args)
    result["leaks"] = published_leaks(dataset, plan)
    print(f"{protocol} protocol, " + leak_line(result["leaks"]).split(": ", 1)[1].split(" (")[0],
          flush=True)
    return result


def row(document: str, results: dict) -> str:
    system, figure, protocol, config = next((q[1], q[2], q[3], q[4]) for q in QUOTED
                                            if q[0] == document)
    cells = []
    for name in ("published", "grouped"):
        auc, acc = np.asarray(results[name]["auc"]), np.asarray(results[name]["accuracy"])
        leaks = results[name]["leaks"]
        cells.append(f"AUC {auc.mean():.3f} ± {auc.std(ddof=1):.3f}, accuracy "
                     f"{acc.mean():.3f} ± {acc.std(ddof=1):.3f}; test images sharing an ROI "
                     f"with training {leaks['published_test_images_sharing_roi']}/"
                     f"{leaks['published_test_images']}")
    return f"| {document} | {system} | {figure} | {protocol} | {cells[0]} | {cells[1]} | `{config}` |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=6)
    args = parser.parse_args()
    args.vgg_cut = "top"  # run_family's backbone option (no backbone here)
    limit_tensorflow_threads(2)
    results = {doc: {p: measure(doc, p, args) for p in ("published", "grouped")}
               for doc in MEASURED}
    print("\n| document | system | published figure | its protocol | here, published "
          "protocol | here, grouped protocol | config |")
    print("|---|---|---|---|---|---|---|")
    for document in MEASURED:
        print(row(document, results[document]))
    for document, system, figure, protocol, config in QUOTED:
        if document not in MEASURED:
            print(f"| {document} | {system} | {figure} | {protocol} | needs the data | "
                  f"needs the data | `{config}` |")
    out = ROOT / "benchmarks" / "results" / "published.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
