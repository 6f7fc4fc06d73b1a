"""`explain` entry point: Grad-CAM / SHAP maps of a registered ensemble for image files.

    python -m tune.explain --input patch.png --output explanations/
    python -m tune.explain --input /data/patches --method all --model-uri models:/mammo-microcal/3
    mlflow run . --env-manager local -e explain -P input=/data/patches

Writes, per image and method, `<name>_<method>.png` (heatmap over the patch) and
`<name>_<method>.npy` (the raw map, H x W), in the input's subfolders (so same-named files
in two folders keep their own maps), plus `explanations.csv` (probability, SHAP base
value); exactly the files of this run become artifacts of an `explain` run. Also home of
`log_explanation_figures`, which the register and evaluate runs call.
"""
from __future__ import annotations

import csv
import shutil
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np

from mammo_core import metrics
from mammo_core.config import ExplanationsConfig
from mammo_core.explanations import METHODS, explain, most_reliable_expert, overlay_png
from mammo_core.patches import as_unit_patches
from mammo_core.predictor import EnsemblePredictor
from mammo_core.tracking import log_figure, tracked_run, use_tracking_store
from tune.predict import image_files, read_images
from tune.project import (PROJECT_ROOT, UsageError, as_trained, base_parser, default_model_uri,
                          load_config, load_ensemble, run_entry)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="an image file or a folder of images")
    parser.add_argument("--output", default="explanations", help="folder to write into")
    parser.add_argument("--method", default="gradcam", choices=[*METHODS, "all"])
    parser.add_argument("--expert", type=int, default=None,
                        help="explain one fold expert instead of the weighted ensemble")
    parser.add_argument("--model-uri", default="",
                        help="pyfunc model URI (default: models:/<registered name>@champion)")
    args = parser.parse_args(argv)
    methods = METHODS if args.method == "all" else (args.method,)
    return run_entry(lambda: explain_files(args.config, Path(args.input), Path(args.output),
                                           methods, args.expert, args.model_uri))


def explain_files(config: str, source: Path, output: Path, methods: tuple[str, ...],
                  expert: int | None, model_uri: str) -> None:
    """Explains every image of `source` with each method; writes and logs the files."""
    experiment, _ = load_config(config)
    use_tracking_store(PROJECT_ROOT)
    files = image_files(source)
    uri = model_uri or default_model_uri(experiment)
    predictor = load_ensemble(uri)
    experiment = as_trained(experiment, predictor, uri)
    # all files first: a bad file stops here, before any run starts
    raw = read_images(files, experiment.data.image_size, experiment.data.resizes,
                      predictor.bit_depth)
    if len(predictor.class_names) > 2:
        raise UsageError(f"{uri} has {len(predictor.class_names)} classes; explanations are "
                         "drawn for binary models only")
    if predictor.experiment.data.pairs:
        raise UsageError(f"{uri} takes (baseline, abnormal) pairs, not image files: explain "
                         "them with POST /explain and {\"pairs\": [[baseline, abnormal]]}")
    units = as_unit_patches(raw, predictor.experiment.data.image_size, predictor.bit_depth)
    names = output_names(files, source)
    rows = []
    with tracked_run(experiment.tracking.experiment_name, f"explain-{source.name}",
                     tags={"mammo.entry_point": "explain", "mammo.kind": "explain",
                           "mammo.model_uri": uri}), tempfile.TemporaryDirectory() as staging:
        # resolved_model_uri: `mlflow run` already logged model_uri as given ('' = default)
        mlflow.log_params({"resolved_model_uri": uri, "methods": ",".join(methods),
                           "images": len(files),
                           "expert": "ensemble" if expert is None else expert})
        for method in methods:
            rows += explain_method(predictor, raw, units, files, names, method, expert,
                                   Path(staging), experiment.explanations.partition_max_evals)
        write_summary(Path(staging) / "explanations.csv", rows)
        # files of earlier runs in `output` are not this run's: log the staging folder only
        mlflow.log_artifacts(staging, "explanations")
        shutil.copytree(staging, output, dirs_exist_ok=True)
    print(f"{len(files)} images explained with {', '.join(methods)} ({uri}); wrote {output}/")


def output_names(files: list[Path], source: Path) -> list[Path]:
    """Returns each file's output name: its path below `source` without the suffix."""
    base = source if source.is_dir() else source.parent
    return [f.relative_to(base).with_name(f.stem) for f in files]


def explain_method(predictor: EnsemblePredictor, raw: np.ndarray, units: np.ndarray,
                   files: list[Path], names: list[Path], method: str, expert: int | None,
                   output: Path, max_evals: int) -> list[dict]:
    """Writes one method's PNG and .npy per image; returns summary rows; logs seconds/image."""
    started = time.monotonic()
    try:
        result = explain(predictor, raw, method, expert=expert, max_evals=max_evals)
    except ValueError as err:  # a method this model cannot do, or a bad expert index
        raise UsageError(str(err)) from err
    seconds = (time.monotonic() - started) / len(files)
    mlflow.log_metric(f"{method}_seconds_per_image", seconds)
    print(f"{method}: {seconds:.2f} s per image")
    rows = []
    for i, (path, name) in enumerate(zip(files, names)):
        # names like 0006s1.pgm_1 hold dots: append to the name, never with_suffix
        target = output / name.parent / f"{name.name}_{method}"
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(f"{target}.npy", result.maps[i])
        Path(f"{target}.png").write_bytes(
            overlay_png(units[i], result.maps[i], signed=method != "gradcam"))
        rows.append({"file": str(path), "method": method,
                     "probability": f"{result.probability[i]:.6f}",
                     "expected_value": "" if result.expected_value is None
                     else f"{result.expected_value:.6f}",
                     "experts": " ".join(map(str, result.experts)),
                     # what SHAP maps add up to: the weighted probability before calibration
                     "explained_probability": f"{result.explained[i]:.6f}"})
    return rows


def write_summary(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def log_explanation_figures(predictor: EnsemblePredictor, raw: np.ndarray, labels: np.ndarray,
                            probability: np.ndarray, config: ExplanationsConfig,
                            class_names: dict[int, str]) -> None:
    """Logs figures/explanations/<class>.png (random patches of each class) and
    misclassified.png (worst first): each patch with the Grad-CAM of the most reliable
    expert and, if the model stores backgrounds, the ensemble's Deep SHAP map."""
    rng = np.random.default_rng(config.seed)
    predicted = (probability >= predictor.ensemble.threshold).astype(int)
    wrong = np.flatnonzero(predicted != labels)
    groups = {class_names.get(c, str(c)): rng.permutation(np.flatnonzero(labels == c))
              [:config.patches_per_class] for c in np.unique(labels)}
    groups["misclassified"] = wrong[np.argsort(-np.abs(labels[wrong] - probability[wrong]))][
        :config.max_misclassified]
    best = most_reliable_expert(predictor)
    units = as_unit_patches(raw, predictor.experiment.data.image_size, predictor.bit_depth,
                            pairs=predictor.experiment.data.pairs)
    if units.ndim == 4:  # (baseline, abnormal) pairs: shown side by side, like their maps
        units = np.concatenate([units[:, 0], units[:, 1]], axis=2)
    # One call per method for every pictured patch: an explainer traces its graphs once
    # per call, which is most of its cost (docs/benchmarks.md, "Time per explanation").
    shown = np.unique(np.concatenate(list(groups.values()))).astype(int)
    if len(shown) == 0:
        return
    maps = {f"Grad-CAM, expert {best} (largest weight)":
            (explain(predictor, raw[shown], "gradcam", expert=best).maps, False)}
    if predictor.backgrounds:
        maps["Deep SHAP, ensemble"] = (explain(predictor, raw[shown], "shap").maps, True)
    row = {index: k for k, index in enumerate(shown)}
    for name, picked in groups.items():
        if len(picked) == 0:
            continue
        rows = [row[i] for i in picked]
        columns = {title: (values[rows], signed) for title, (values, signed) in maps.items()}
        captions = [f"y={labels[i]} p={probability[i]:.2f}" for i in picked]
        log_figure(metrics.explanation_figure(units[picked], columns, captions,
                                              f"Explanations: {name}"),
                   f"figures/explanations/{name}.png")


if __name__ == "__main__":
    sys.exit(main())
