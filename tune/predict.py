"""`predict` entry point: a registered ensemble on image files -> a CSV of probabilities.

    python -m tune.predict --input patch.png
    python -m tune.predict --input /data/new_patches --output scores.csv \
        --model-uri models:/mammo-microcal/3

Writes one row per image: path, probability, label, expert_0 ... expert_k. Every file is
read before the model runs, so a corrupt or wrongly sized image stops the run with its
name before anything is written. The run (`predict-<input name>`) logs the CSV and the
label counts.
"""
from __future__ import annotations

import sys
from pathlib import Path

import mlflow
import numpy as np

from mammo_core.images import EXTENSION_FORMATS, read_image
from mammo_core.tracking import tracked_run, use_tracking_store
from tune.project import (PROJECT_ROOT, UsageError, as_trained, base_parser, default_model_uri,
                          ensemble_inside, load_config, load_pyfunc, run_entry)

IMAGE_SUFFIXES = tuple(EXTENSION_FORMATS)  # every format `decode` reads, DICOM included


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="an image file or a folder of images")
    parser.add_argument("--output", default="predictions.csv", help="CSV file to write")
    parser.add_argument("--model-uri", default="",
                        help="pyfunc model URI (default: models:/<registered name>@champion)")
    args = parser.parse_args(argv)
    return run_entry(lambda: predict_files(args.config, Path(args.input), args.output,
                                           args.model_uri))


def predict_files(config: str, source: Path, output: str, model_uri: str) -> None:
    """Scores every image of `source` and writes the CSV (path, probability, label, experts)."""
    experiment, _ = load_config(config)
    use_tracking_store(PROJECT_ROOT)
    files = image_files(source)
    uri = model_uri or default_model_uri(experiment)
    model = load_pyfunc(uri)
    predictor = ensemble_inside(model)
    experiment = as_trained(experiment, predictor, uri)
    if experiment.data.pairs:
        raise UsageError("this study scores (baseline, abnormal) pairs, not single files: use "
                         "the pyfunc with arrays (N, 2, rows, cols) or REST {\"pairs\": [...]}")
    images = read_images(files, experiment.data.image_size, experiment.data.resizes,
                         predictor.bit_depth if predictor else None)
    with tracked_run(experiment.tracking.experiment_name, f"predict-{source.name}",
                     tags={"mammo.entry_point": "predict", "mammo.kind": "predict",
                           "mammo.model_uri": uri}):
        table = model.predict(images)
        table.insert(0, "path", [str(f) for f in files])
        table.to_csv(output, index=False, float_format="%.6f")
        counts = table["label"].value_counts().sort_index()
        # resolved_model_uri: `mlflow run` already logged model_uri as given ('' = default)
        mlflow.log_params({"resolved_model_uri": uri, "images": len(files)})
        mlflow.log_metrics({f"labelled_{label}": int(n) for label, n in counts.items()})
        mlflow.log_artifact(output)
    print(f"{len(files)} images scored with {uri}: "
          + ", ".join(f"{n} labelled {label}" for label, n in counts.items()) + f"; wrote {output}")


def read_images(files: list[Path], size: tuple[int, int], resize: bool = False,
                depth: int | None = None) -> np.ndarray:
    """Returns the files as float32 (N, rows, columns) in [0, 1]; each image is scaled by
    its own bit depth before stacking, so 8- and 16-bit files can share a folder; 16-bit
    files at least by `depth` (the model's training depth: images.decode).

    With `resize` (the study resamples its images), files of another size are resampled.
    """
    return np.stack([read_image(f, size, resize=resize, depth=depth) for f in files])


def image_files(path: Path) -> list[Path]:
    """Returns the image file, or every image under the folder (sorted); raises UsageError."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UsageError(f"no such file or folder: {path}")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {path}")
    return files


if __name__ == "__main__":
    sys.exit(main())
