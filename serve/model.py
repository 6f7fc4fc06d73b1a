"""Loading the registered ensemble for serving, with what `/model` reports about it."""
from __future__ import annotations

from dataclasses import dataclass

import mlflow

from mammo_core.images import formats_of
from mammo_core.predictor import EnsemblePredictor
from mammo_core.tracking import registry_reference, tracking_uri
from tune.project import PROJECT_ROOT


@dataclass(frozen=True)
class LoadedModel:
    """What one replica serves; replaced as a whole on reload, so requests see one version."""

    predictor: EnsemblePredictor
    info: dict
    source: tuple[str, str] = ("", "")  # (version URI, tracking URI): what loads it again


def load_model(model_uri: str, store: str = "") -> LoadedModel:
    """Loads `model_uri` (an alias is resolved to its version first); returns it with its info."""
    store = store or tracking_uri(PROJECT_ROOT)
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    info = registry_reference(model_uri) | {"model_uri": model_uri}
    # Load the version the alias points at now, so /model reports what is really served
    # (and the explanation process loads the same one).
    resolved = f"models:/{info['name']}/{info['version']}" if info["name"] else model_uri
    predictor = mlflow.pyfunc.load_model(resolved).unwrap_python_model().predictor
    info.update(card_facts(info), image_size=list(predictor.experiment.data.image_size),
                # image files of another size are resampled when the study does so
                resizes=predictor.experiment.data.resizes,
                # the formats of the study's own files, accepted whatever the settings say
                study_formats=list(formats_of(predictor.experiment.data.extensions)),
                pairs=predictor.experiment.data.pairs,  # siamese: (baseline, abnormal) pairs
                threshold=predictor.ensemble.threshold,
                weights=[float(w) for w in predictor.ensemble.weights],
                input={"shape": "(N, rows, cols) per request, N <= max_images_per_request",
                       "formats": ["JSON images: base64 PNG/PGM", "JSON inputs: nested array",
                                   "multipart image files",
                                   "POST /invocations: MLflow's inputs, instances, "
                                   "dataframe_split, dataframe_records, CSV, Parquet"],
                       "image_pixels": "each image file scaled by its own bit depth",
                       "integer_pixels": f"{predictor.bit_depth}-bit",
                       "float_pixels": "[0, 1]"},
                intended_use="research only; not for diagnosis")
    return LoadedModel(predictor, info, (resolved, store))


def card_facts(info: dict) -> dict:
    """Returns the registry version's description and hold-out metrics, if registered."""
    if not info["version"]:
        return {}
    client = mlflow.MlflowClient()
    version = client.get_model_version(info["name"], info["version"])
    metrics = {}
    register_run = version.tags.get("mammo.register_run")
    if register_run:
        metrics = {k: v for k, v in client.get_run(register_run).data.metrics.items()
                   if k.startswith("holdout_")}
    return {"model_card": version.description, "metrics": metrics,
            "search_run": version.tags.get("mammo.search_run", ""),
            "run_id": version.run_id or "", "source": version.source or ""}
