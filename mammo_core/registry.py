"""The names of the project's plug-ins, one registry per kind, each name with where its
implementation lives.

Configs are checked against these names without importing an implementation (Keras for a
model family, a reader's decoders for a layout): an entry is a ``"module:function"`` path,
imported on first use. A new collection or family is one new module and one line here.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Callable


class Registry:
    """Names of one kind (`kind`, for messages) mapped to "module:attribute" paths."""

    def __init__(self, kind: str, entries: dict[str, str]):
        self.kind, self._entries = kind, dict(entries)

    @property
    def names(self) -> tuple[str, ...]:
        """Returns the registered names, in registration order."""
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self._entries)

    def load(self, name: str) -> Callable[..., Any]:
        """Returns the implementation registered as `name`; raises ValueError naming the
        known names for an unknown one."""
        return getattr(self.module(name), self._entries[name].split(":")[1])

    def module(self, name: str) -> ModuleType:
        """Returns the module that implements `name` (its constants describe it too)."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {list(self._entries)}")
        return importlib.import_module(self._entries[name].split(":")[0])


# data.layout: how a collection is stored -> its reader(root, DataConfig) -> Dataset
LAYOUTS = Registry("data layout", {
    "folders": "mammo_core.readers.folders:load_class_folders",
    "cbis_npy": "mammo_core.readers.cbis_npy:load_cbis_arrays",
    "cbis_dicom": "mammo_core.readers.cbis_dicom:load_cbis_dicom",
    "mias": "mammo_core.readers.mias:load_mias",
})

# model.family: builder(hp, input_shape, ModelConfig, seed, n_classes) -> an uncompiled
# keras.Model (mammo_core/families.build_model compiles it with the family's recipe)
FAMILIES = Registry("model family", {
    "hypermodel": "mammo_core.hypermodel:build_network",
    "microcal_hypermodel": "mammo_core.families:microcal_hypermodel",
    "microcal_cnn": "mammo_core.families:microcal_cnn",
    **{f"mass_calc_m{k}": f"mammo_core.families:mass_calc_m{k}" for k in range(6)},
    "mias_cnn": "mammo_core.families:mias_cnn",
    "cbis_scratch": "mammo_core.families:cbis_scratch",
    "vgg16": "mammo_core.families:vgg16",
    "inception_v3": "mammo_core.families:inception_v3",
    "siamese": "mammo_core.families:siamese",
    "siamese_cbis": "mammo_core.families:siamese_cbis",
})
# the families that take (baseline, abnormal) pairs of patches (data.pairs)
PAIR_FAMILIES = ("siamese", "siamese_cbis")

# registry.method: how the fold experts' probabilities are combined (mammo_core/ensemble.py)
ENSEMBLE_METHODS = ("average", "learned", "best_single")
