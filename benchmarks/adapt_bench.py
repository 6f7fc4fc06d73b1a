"""Adapting a registered model to a shifted site from unlabelled patches, against
`recalibrate` on 20 labelled ones, on the model's own hold-out.

    python benchmarks/adapt_bench.py [--model-uri models:/mammo-microcal@champion]
        [--repeats 3] [--bootstrap 100]

The hold-out (images no expert trained on) is split by case, per repeat, into a batch
pool and a scoring half: the estimate never sees the patches it is scored on, nor their
cases. Under each shift of the shift benchmark, an unlabelled batch of 20, 50 or 200
patches at prevalence 5 %, 20 % or 50 % is drawn from the pool (a pool holding fewer
patches of a class than a batch needs adds their flips and 90-degree turns, which keep
every intensity statistic), `estimate_map` fits the gain and offset, its bootstrap
drawing the batch's cases whole (as `adapt` does when file names give cases), and the
mapped model scores the other half at its registered threshold. Baselines in the same
run: the model as registered, `recalibrate`'s refit on 20 labelled pool patches (half
per class, threshold kept), the batch of 50 at 20 % bootstrapped over patches, and the
true inverse of contrast and brightness shifts (the ceiling of any gain and offset).
Logs an MLflow run (kind `adapt_bench`, `adapt/table.csv`); prints markdown tables.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import mlflow
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mammo_core import ensemble as ens  # noqa: E402
from mammo_core import metrics  # noqa: E402
from mammo_core.adaptation import AdaptationError, IntensityMap, estimate_map  # noqa: E402
from mammo_core.config import Experiment  # noqa: E402
from mammo_core.dataset import Dataset  # noqa: E402
from mammo_core.predictor import EnsemblePredictor  # noqa: E402
from mammo_core.shift import Shift, combined  # noqa: E402
from mammo_core.tracking import registry_reference, tracked_run, use_tracking_store  # noqa: E402
from tune.project import PROJECT_ROOT, load_config, load_data, load_ensemble, load_fold_plan  # noqa: E402

SHIFTS = [("none", ()), ("contrast 0.8", (Shift("contrast", 0.8),)),
          ("contrast 1.5", (Shift("contrast", 1.5),)), ("contrast 2", (Shift("contrast", 2.0),)),
          ("contrast 1.5 + brightness +0.05", (Shift("contrast", 1.5), Shift("brightness", 0.05))),
          ("gamma 0.8", (Shift("gamma", 0.8),)), ("gamma 1.25", (Shift("gamma", 1.25),)),
          ("noise 0.01", (Shift("noise", 0.01),)), ("noise 0.02", (Shift("noise", 0.02),))]
ALL_SIZES, PREVALENCES = (20, 50, 200), (0.05, 0.2, 0.5)
SIZES = list(ALL_SIZES)  # the batch sizes this run draws (--sizes)
# the batch also adapted with the bootstrap over patches (how adapt drew before it knew
# cases, and still does when file names do not give them): the baseline of the same run
BEFORE = (50, 0.2)


def dihedral(images: np.ndarray) -> np.ndarray:
    """Returns the 8 flips and quarter turns of each image, originals first."""
    turns = [np.rot90(images, k, axes=(-2, -1)) for k in range(4)]
    return np.concatenate(turns + [np.flip(t, axis=-1) for t in turns])


def draw(pool: np.ndarray, labels: np.ndarray, cases: np.ndarray, n: int, prevalence: float,
         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Returns n pool images, round(n * prevalence) (at least 1) of them abnormal, and
    their cases (a site's file names carry them, as the study's do)."""
    k = max(1, round(n * prevalence))
    images, ids = [], []
    for label, count in ((1, k), (0, n - k)):
        own, own_cases = pool[labels == label], cases[labels == label]
        if count > len(own):
            own, own_cases = dihedral(own), np.tile(own_cases, 8)
        picked = rng.choice(len(own), count, replace=count > len(own))
        images.append(own[picked])
        ids.append(own_cases[picked])
    return np.concatenate(images), np.concatenate(ids)


def score(predictor, units: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    p = predictor.ensemble.combine(predictor.expert_probabilities(predictor.model_inputs(units)))
    m = metrics.binary_metrics(labels, p, predictor.ensemble.threshold)
    return {"balanced_accuracy": metrics.balanced_accuracy(m), "auc": m["auc"]}


def recalibrated(predictor, units: np.ndarray, labels: np.ndarray, registry,
                 rng: np.random.Generator):
    """Returns the predictor refitted on 10 labelled patches of each class (threshold kept)."""
    picked = np.concatenate([rng.choice(np.flatnonzero(labels == c), 10, replace=False)
                             for c in (0, 1)])
    experts_p = predictor.expert_probabilities(predictor.model_inputs(units[picked]))
    refit = ens.calibrated(predictor.ensemble.weights, experts_p, labels[picked],
                           registry.replace(calibration="platt"), predictor.ensemble.threshold)
    return replace(predictor, ensemble=refit)


class Holdout(NamedTuple):
    """A registered model and its hold-out: [0, 1] patches, labels and cases; with the
    whole data set and a mask of the hold-out in it."""
    experiment: Experiment
    uri: str
    version: str
    predictor: EnsemblePredictor
    raw: np.ndarray
    labels: np.ndarray
    cases: np.ndarray
    dataset: Dataset
    held: np.ndarray


def load_holdout(config: str, model_uri: str) -> Holdout:
    """Returns the model at `model_uri` ("" for the config's champion) with the hold-out
    of the search it was registered from; exits if it keeps no intensity reference."""
    experiment, _ = load_config(config)
    use_tracking_store(PROJECT_ROOT)
    uri = model_uri or f"models:/{experiment.tracking.registered_model_name}@champion"
    ref = registry_reference(uri)
    version = mlflow.MlflowClient().get_model_version(ref["name"], ref["version"])
    predictor = load_ensemble(uri)
    if predictor.reference is None:
        sys.exit(f"{uri} keeps no intensity reference: register it with this version first")
    dataset, _ = load_data(experiment, "")
    holdout = load_fold_plan(version.tags["mammo.search_run"], dataset).holdout
    held = np.zeros(len(dataset.labels), dtype=bool)
    held[holdout] = True
    return Holdout(experiment, uri, ref["version"], predictor,
                   predictor.unit_patches(dataset.images[holdout]), dataset.labels[holdout],
                   dataset.cases[holdout], dataset, held)


def batch_pool(cases: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Returns a mask of the patches whose cases form the batch pool: half the cases, at
    random; the others are scored."""
    order = rng.permutation(np.unique(cases))
    return np.isin(cases, order[: len(order) // 2])


def one_repeat(predictor, raw, labels, cases, repeat: int, bootstrap: int, registry) -> list[dict]:
    """Returns the rows of one case split: every shift, batch size and prevalence."""
    rng = np.random.default_rng(repeat)
    in_pool = batch_pool(cases, rng)
    rows = []
    for name, shifts in SHIFTS:
        shifted = combined(raw, shifts, seed=repeat) if shifts else raw
        pool, scored = (shifted[in_pool], labels[in_pool]), (shifted[~in_pool], labels[~in_pool])
        pool_cases = cases[in_pool]
        base = {"shift": name, "repeat": repeat}
        rows.append(base | {"method": "as registered"} | score(predictor, *scored))
        truth = true_mapping(shifts)
        if truth is not None:
            rows.append(base | {"method": "true mapping"}
                        | score(replace(predictor, mapping=truth), *scored))
        rows.append(base | {"method": "recalibrate, 20 labelled"}
                    | score(recalibrated(predictor, *pool, registry, rng), *scored))
        for n in SIZES:
            for prevalence in PREVALENCES:
                batch, batch_cases = draw(*pool, pool_cases, n, prevalence, rng)
                row = base | {"n": n, "prevalence": prevalence}
                rows.append(adapted(predictor, batch, batch_cases, scored, bootstrap, repeat)
                            | row | {"method": f"adapt, {n} unlabelled"})
                if (n, prevalence) == BEFORE:  # the same batch, bootstrapped over patches
                    rows.append(adapted(predictor, batch, None, scored, bootstrap, repeat)
                                | row | {"method": "adapt, patch bootstrap"})
    return rows


def true_mapping(shifts: tuple[Shift, ...]) -> IntensityMap | None:
    """Returns the mapping that undoes contrast and brightness shifts exactly (the ceiling
    of any estimate), or None for shifts no gain and offset undo (gamma, noise)."""
    if any(s.kind not in ("contrast", "brightness") for s in shifts):
        return None
    return IntensityMap(gain=float(np.prod([s.amount for s in shifts if s.kind == "contrast"])),
                        offset=float(sum(s.amount for s in shifts if s.kind == "brightness")))


def adapted(predictor, batch: np.ndarray, cases: np.ndarray | None, scored, bootstrap: int,
            seed: int) -> dict:
    """Returns the scores on `scored` after adapting to `batch` (its `cases` drawn whole by
    the bootstrap, or None: patches drawn), with the estimate; a refusal scores as
    registered."""
    try:
        mapping = estimate_map(batch, predictor.reference, bootstrap=bootstrap, cases=cases,
                               seed=seed)
    except AdaptationError:
        return {"refused": 1.0} | score(predictor, *scored)
    return ({"refused": 0.0, "gain": mapping.estimate[0], "applied_gain": mapping.gain,
             "offset": mapping.offset, "cases": mapping.cases}
            | score(replace(predictor, mapping=mapping), *scored))


def tables(frame: pd.DataFrame) -> str:
    """Returns the markdown summary: per shift, balanced accuracy mean ± std."""
    def cell(values: pd.Series) -> str:
        return f"{values.mean():.3f} ± {values.std(ddof=0):.3f}" if len(values) else "—"

    out = ["Balanced accuracy on the scoring half (mean ± std over repeats); adapt at "
           "prevalence 20 % by batch size, and at 50 patches by prevalence:", "",
           "| shift | as registered | recalibrate, 20 labelled | adapt 20 | adapt 50 | adapt 200 "
           "| 50 @ 5 % | 50 @ 50 % | 50, patch bootstrap | true mapping | gain (50 @ 20 %) "
           "| AUC before → after (50 @ 20 %) | refused: 50 @ 5 / 20 / 50 % |",
           "|---" * 13 + "|"]
    for name, _ in SHIFTS:
        f = frame[frame["shift"] == name]
        adapt = f[f["method"].str.fullmatch(r"adapt, \d+ unlabelled")]
        patches = f[f["method"] == "adapt, patch bootstrap"]
        at = {(n, p): adapt[(adapt["n"] == n) & (adapt["prevalence"] == p)]
              for n in ALL_SIZES for p in PREVALENCES}
        registered = f[f["method"] == "as registered"]
        truth = f["method"] == "true mapping"
        out.append(" | ".join([
            f"| {name}", cell(registered["balanced_accuracy"]),
            cell(f[f["method"] == "recalibrate, 20 labelled"]["balanced_accuracy"]),
            *(cell(at[(n, 0.2)]["balanced_accuracy"]) for n in ALL_SIZES),
            cell(at[(50, 0.05)]["balanced_accuracy"]), cell(at[(50, 0.5)]["balanced_accuracy"]),
            cell(patches["balanced_accuracy"]),
            cell(f[truth]["balanced_accuracy"]) if truth.any() else "—",
            cell(at[(50, 0.2)]["gain"]),
            f"{registered['auc'].mean():.3f} → {at[(50, 0.2)]['auc'].mean():.3f}",
            " / ".join(f"{int(at[(50, p)]['refused'].sum())}" for p in PREVALENCES) + " |"]))
    refused = frame.get("refused", pd.Series(dtype=float)).fillna(0)
    by_patch = frame["method"] == "adapt, patch bootstrap"
    out += ["", f"Refused estimates (scored as registered): {int(refused[~by_patch].sum())} "
                f"of {int((frame['n'].notna() & ~by_patch).sum())} drawing cases, "
                f"{int(refused[by_patch].sum())} of {int(by_patch.sum())} drawing patches."]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/microcal.yaml")
    parser.add_argument("--model-uri", default="")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bootstrap", type=int, default=100)
    parser.add_argument("--shifts", nargs="*", default=[n for n, _ in SHIFTS],
                        help="a subset of the shifts, by name (default: all)")
    parser.add_argument("--sizes", nargs="*", type=int, default=list(ALL_SIZES),
                        choices=ALL_SIZES, help="a subset of the batch sizes (default: all)")
    args = parser.parse_args()
    SHIFTS[:] = [s for s in SHIFTS if s[0] in args.shifts]
    SIZES[:] = [n for n in ALL_SIZES if n in args.sizes]
    experiment, uri, version, predictor, raw, labels, cases, *_ = load_holdout(args.config,
                                                                               args.model_uri)
    start, rows = time.perf_counter(), []
    for repeat in range(args.repeats):
        rows += one_repeat(predictor, raw, labels, cases, repeat, args.bootstrap,
                           experiment.registry)
        print(f"repeat {repeat + 1}/{args.repeats} done ({time.perf_counter() - start:.0f} s)",
              flush=True)
    frame = pd.DataFrame(rows)
    summary = tables(frame)
    with tracked_run(experiment.tracking.experiment_name, f"adapt-bench-v{version}",
                     tags={"mammo.kind": "adapt_bench", "mammo.model_uri": uri}):
        mlflow.log_params({"model_version": version, "holdout_images": len(labels),
                           "repeats": args.repeats, "bootstrap": args.bootstrap})
        mlflow.log_text(frame.to_csv(index=False), "adapt/table.csv")
        mlflow.log_text(summary, "adapt/summary.md")
    print(f"\n{uri} = v{version}: hold-out {len(labels)} images in "
          f"{len(np.unique(cases))} cases, threshold {predictor.ensemble.threshold:.4f}, "
          f"{time.perf_counter() - start:.0f} s\n")
    print(summary)


if __name__ == "__main__":
    main()
