"""Site recalibration on a few labelled patches of a shifted source: balanced accuracy after.

    python benchmarks/recalibration_bench.py [--model-uri models:/mammo-microcal@champion]
        [--sample 20] [--draws 20]

The "new site" is the registered model's own ensemble hold-out (images no expert trained
on) under contrast x1.5 around each patch's mean plus brightness +0.05. Each draw takes
`--sample` labelled patches of it (half per class, whole cases, seeded) as the site's
sample, refits the calibration on them (`mammo_core.ensemble.calibrated`, the experts
and weights unchanged; the threshold kept, as `recalibrate` does by default, or re-chosen),
and scores the rest of the shifted hold-out (cases the sample did not touch) before (the
registered threshold) and after. Prints mean ± std over the draws.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mlflow
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mammo_core.shift import Shift, combined  # noqa: E402
from mammo_core.tracking import registry_reference, use_tracking_store  # noqa: E402
from tune.project import PROJECT_ROOT, load_config, load_data, load_fold_plan  # noqa: E402
from mammo_core.ensemble import calibrated  # noqa: E402
from tune.recalibrate import kept_threshold, scores  # noqa: E402

SITE = (Shift("contrast", 1.5), Shift("brightness", 0.05))


def draw_sample(labels: np.ndarray, cases: np.ndarray, size: int,
                rng: np.random.Generator) -> np.ndarray:
    """Returns indices of whole cases adding up to about size/2 images per class."""
    picked = []
    for label in (0, 1):
        order = rng.permutation(np.unique(cases[labels == label]))
        taken = []
        for case in order:
            if len(taken) >= size // 2:
                break
            taken += np.flatnonzero((cases == case) & (labels == label)).tolist()
        picked += taken
    return np.array(sorted(picked))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/microcal.yaml")
    parser.add_argument("--model-uri", default="")
    parser.add_argument("--sample", type=int, default=20)
    parser.add_argument("--draws", type=int, default=20)
    args = parser.parse_args()
    experiment, _ = load_config(args.config)
    use_tracking_store(PROJECT_ROOT)
    uri = args.model_uri or f"models:/{experiment.tracking.registered_model_name}@champion"
    ref = registry_reference(uri)
    search_run = mlflow.MlflowClient().get_model_version(ref["name"], ref["version"]).tags[
        "mammo.search_run"]
    dataset, _ = load_data(experiment, "")
    holdout = load_fold_plan(search_run, dataset).holdout
    predictor = mlflow.pyfunc.load_model(uri).unwrap_python_model().predictor
    shifted = combined(dataset.images[holdout], SITE)
    labels, cases = dataset.labels[holdout], dataset.cases[holdout]
    experts_p = predictor.expert_probabilities(predictor.model_inputs(shifted))
    registry = predictor.experiment.registry.replace(calibration="platt")
    rng = np.random.default_rng(0)
    rows = {"as registered": [], "recalibrated, threshold kept (default)": [],
            "recalibrated, threshold re-chosen on the sample": []}
    kept = kept_threshold(predictor.ensemble, "keep")
    for _ in range(args.draws):
        sample = draw_sample(labels, cases, args.sample, rng)
        rest = np.setdiff1d(np.arange(len(labels)), sample)
        rest = rest[~np.isin(cases[rest], cases[sample])]
        rows["as registered"].append(scores(labels[rest], predictor.ensemble.combine(
            experts_p[rest]), predictor.ensemble.threshold))
        for name, threshold in zip(list(rows)[1:], (kept, None)):
            site = calibrated(predictor.ensemble.weights, experts_p[sample], labels[sample],
                              registry, threshold)
            rows[name].append(scores(labels[rest], site.combine(experts_p[rest]),
                                     site.threshold))
    print(f"{uri} = v{ref['version']}; site = hold-out ({len(labels)} images) under contrast "
          f"x1.5 + brightness +0.05; {args.draws} draws of {args.sample} labelled patches\n")
    print("| | AUC | sensitivity | specificity | balanced accuracy | ECE |\n|---|---|---|---|---|---|")
    for name, draws in rows.items():
        cells = [f"{np.mean([r[m] for r in draws]):.3f} ± {np.std([r[m] for r in draws]):.3f}"
                 for m in ("auc", "sensitivity", "specificity", "balanced_accuracy", "ece")]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
