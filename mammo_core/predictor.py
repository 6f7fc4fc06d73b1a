"""The packaged ensemble: fold experts + weights + the training preprocessing, as files.

`write_bundle` turns the pieces into files (experts as `.keras`, weights and threshold as
JSON, the experiment config as YAML); `load_predictor` turns those files back into an
`EnsemblePredictor` that scores raw patches exactly as the experts were trained.
"""
from __future__ import annotations

import json
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Mapping, Sequence

import keras
import numpy as np
import pandas as pd
import yaml

import mammo_core.hypermodel  # noqa: F401  (registers the custom layers the experts use)
from mammo_core.adaptation import IntensityMap, IntensityReference
from mammo_core.config import Experiment, experiment_from_dict
from mammo_core.ensemble import Ensemble
from mammo_core.images import decode_image
from mammo_core.inputs import Decoder, raw_patches
from mammo_core.patches import as_unit_patches
from mammo_core.preprocessing import preprocess

ENSEMBLE_KEY = "ensemble"
EXPERIMENT_KEY = "experiment"
EXPERT_PREFIX = "expert_"
BACKGROUND_KEY = "background"
REFERENCE_KEY = "intensity_reference"  # the training patches' intensity statistics
MAPPING_KEY = "intensity_map"  # a site version's mapping onto the training scale
_BATCH = 256


@dataclass
class EnsemblePredictor:
    experts: Sequence[keras.Model]
    ensemble: Ensemble
    experiment: Experiment
    bit_depth: int  # of the training images: how raw integer pixels are scaled
    # per expert, preprocessed patches from its own training part: SHAP's reference
    backgrounds: Sequence[np.ndarray] = ()
    # the training patches' intensity statistics (None: registered before they were kept)
    reference: IntensityReference | None = None
    # a site version's mapping of its patches onto the training scale (None: none)
    mapping: IntensityMap | None = None

    def unit_patches(self, raw: np.ndarray) -> np.ndarray:
        """Returns raw patches checked and scaled to [0, 1], on the training intensity
        scale (a site version's mapping applied)."""
        units = as_unit_patches(raw, self.experiment.data.image_size, self.bit_depth,
                                pairs=self.experiment.data.pairs)
        return self.mapping.apply(units) if self.mapping is not None else units

    def model_inputs(self, raw: np.ndarray) -> np.ndarray:
        """Returns raw patches checked and preprocessed as in training, (N, H, W, 1)."""
        return preprocess(self.unit_patches(raw), self.experiment.preprocessing)

    def patches_of(self, model_input, decode: Decoder | None = None) -> np.ndarray:
        """Returns any input MLflow's scoring protocol hands over (an array, a table of
        pixel or image columns, named arrays: `mammo_core.inputs`) as one raw array.

        `decode` reads image bytes; by default at the study's size (resampled if the study
        resamples) and 16-bit containers at least at the training depth.
        """
        data = self.experiment.data
        shape = (2, *data.image_size) if data.pairs else tuple(data.image_size)
        return raw_patches(model_input, shape, decode or self.decode)

    def decode(self, data: bytes, name: str) -> np.ndarray:
        """Returns one encoded image as [0, 1] pixels the way the study read its files."""
        return decode_image(data, tuple(self.experiment.data.image_size), name,
                            resize=self.experiment.data.resizes, depth=self.bit_depth)

    @property
    def class_names(self) -> list[str]:
        """Returns the task's class names in label order."""
        return self.experiment.data.label_names

    def expert_probabilities(self, images: np.ndarray, executor: Executor | None = None,
                             graph: bool = False) -> np.ndarray:
        """Returns each expert's probability for preprocessed images: (N, experts) for a
        binary task, (N, experts, K) for K classes.

        With an `executor` the experts run at once on its threads (a compiled step lets
        go of the interpreter lock); with `graph` as one compiled graph of all of them, a
        single call where there were one per expert (a single image's time is mostly the
        calls' dispatch). What a serving replica measures faster (serve/host.py); one
        after the other otherwise. All three give the same numbers.
        """
        if graph:
            columns = [np.concatenate(parts) for parts in zip(*map(self._all_experts,
                                                                   _chunks(images)))]
            return np.stack([_column(c) for c in columns], axis=1).astype(np.float64)
        columns = (executor.map if executor else map)(partial(_probabilities, images),
                                                      self.experts)
        return np.stack(list(columns), axis=1).astype(np.float64)

    @cached_property
    def _all_experts(self):
        """Returns a function of a batch that runs every expert in one compiled graph and
        gives their outputs as arrays, in expert order (traced on first use)."""
        import tensorflow as tf

        experts = list(self.experts)

        @tf.function(reduce_retracing=True)
        def run(images):
            return [expert(images, training=False) for expert in experts]

        return lambda images: [np.asarray(out) for out in run(tf.convert_to_tensor(images))]

    def predict(self, raw: np.ndarray, executor: Executor | None = None, graph: bool = False
                ) -> dict[str, np.ndarray]:
        """Returns {"probability": (N,), "label": (N,), "experts": (N, experts)} for raw
        patches of a binary task; for K classes "probability" is (N, K) and "experts"
        (N, experts, K), and "label" the most probable class. `executor`, `graph`: as in
        `expert_probabilities`.

        Raises PatchError (a ValueError) for input that is not a batch of patches.
        """
        experts = self.expert_probabilities(self.model_inputs(raw), executor, graph)
        probability = self.ensemble.combine(experts)
        return {"probability": probability, "label": self.ensemble.labels(probability),
                "experts": experts}

    def frame(self, out: dict[str, np.ndarray]) -> pd.DataFrame:
        """Returns `predict`'s output as the pyfunc's table (the columns of `columns`)."""
        return pd.DataFrame(self.columns(out))

    def columns(self, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Returns the pyfunc table's columns in order (`table_columns`)."""
        return table_columns(out, self.class_names)


def _probabilities(images: np.ndarray, model: keras.Model) -> np.ndarray:
    """Returns one expert's probabilities: (N,) for a binary task, (N, K) for K classes."""
    # predict_on_batch runs the compiled step without predict()'s loop set-up:
    # measured 2 ms for one image vs 20 ms for an eager call (25 vs 74 ms for 32).
    return _column(np.concatenate([np.asarray(model.predict_on_batch(chunk))
                                   for chunk in _chunks(images)]))


def _chunks(images: np.ndarray) -> list[np.ndarray]:
    """Returns the images in consecutive chunks of at most _BATCH."""
    return [images[i:i + _BATCH] for i in range(0, len(images), _BATCH)]


def _column(out: np.ndarray) -> np.ndarray:
    """Returns an expert's output as (N,) for a binary task (one sigmoid), else (N, K)."""
    return out.ravel() if out.shape[-1] == 1 else out


def table_columns(out: dict[str, np.ndarray], class_names: list[str]) -> dict[str, np.ndarray]:
    """Returns `predict`'s output as the pyfunc table's columns, in order: probability,
    label, expert_k (binary), or probability.<class>, label, expert_k.<class>."""
    experts = range(out["experts"].shape[1])
    if out["probability"].ndim == 1:
        return {"probability": out["probability"], "label": out["label"]} | {
            f"expert_{k}": out["experts"][:, k] for k in experts}
    return ({f"probability.{n}": out["probability"][:, c] for c, n in enumerate(class_names)}
            | {"label": out["label"]}
            | {f"expert_{k}.{n}": out["experts"][:, k, c]
               for k in experts for c, n in enumerate(class_names)})


def probabilities_of(frame: pd.DataFrame) -> np.ndarray:
    """Returns the ensemble probabilities in a pyfunc table: (N,) binary or (N, K)."""
    if "probability" in frame:
        return frame["probability"].to_numpy()
    return frame[[c for c in frame.columns if c.startswith("probability.")]].to_numpy()


def write_bundle(folder: Path, predictor: EnsemblePredictor) -> dict[str, str]:
    """Writes the predictor's files into `folder`; returns {artifact name: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for k, model in enumerate(predictor.experts):
        paths[f"{EXPERT_PREFIX}{k}"] = str(folder / f"expert_{k}.keras")
        model.save(paths[f"{EXPERT_PREFIX}{k}"])
    paths[ENSEMBLE_KEY] = str(folder / "ensemble.json")
    Path(paths[ENSEMBLE_KEY]).write_text(json.dumps(
        predictor.ensemble.to_dict() | {"bit_depth": predictor.bit_depth}, indent=1))
    paths[EXPERIMENT_KEY] = str(folder / "experiment.yaml")
    Path(paths[EXPERIMENT_KEY]).write_text(yaml.safe_dump(predictor.experiment.to_dict(),
                                                          sort_keys=False))
    for key, value in ((REFERENCE_KEY, predictor.reference), (MAPPING_KEY, predictor.mapping)):
        if value is not None:
            paths[key] = str(folder / f"{key}.json")
            Path(paths[key]).write_text(json.dumps(value.to_dict(), indent=1))
    if predictor.backgrounds:
        paths[BACKGROUND_KEY] = str(folder / "background.npz")
        np.savez_compressed(paths[BACKGROUND_KEY], *[np.asarray(b, np.float32)
                                                     for b in predictor.backgrounds])
    return paths


def load_predictor(paths: Mapping[str, str]) -> EnsemblePredictor:
    """Returns the predictor stored by `write_bundle` ({artifact name: local path})."""
    raw = json.loads(Path(paths[ENSEMBLE_KEY]).read_text())
    experiment = experiment_from_dict(yaml.safe_load(Path(paths[EXPERIMENT_KEY]).read_text()))
    names = sorted((k for k in paths if k.startswith(EXPERT_PREFIX)),
                   key=lambda k: int(k[len(EXPERT_PREFIX):]))
    experts = [keras.saving.load_model(paths[name], compile=False) for name in names]
    backgrounds = ()
    if BACKGROUND_KEY in paths:  # models registered before explanations have none
        with np.load(paths[BACKGROUND_KEY]) as stored:
            backgrounds = tuple(stored[f"arr_{k}"] for k in range(len(experts)))
    # models registered before intensity references (or site mappings) have none
    reference = (IntensityReference.from_dict(json.loads(Path(paths[REFERENCE_KEY]).read_text()))
                 if REFERENCE_KEY in paths else None)
    mapping = (IntensityMap.from_dict(json.loads(Path(paths[MAPPING_KEY]).read_text()))
               if MAPPING_KEY in paths else None)
    return EnsemblePredictor(experts, Ensemble.from_dict(raw), experiment, int(raw["bit_depth"]),
                             backgrounds, reference, mapping)
