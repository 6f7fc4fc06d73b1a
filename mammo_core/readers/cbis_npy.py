"""CBIS-DDSM abnormality patches as NumPy arrays: baseline / abnormal pairs per patient.

The release holds, per partition, ``<prefix>_images.npy`` (N, rows, columns[, 1]) 16-bit
patches and ``<prefix>_labels.npy`` (N,) labels: for every patient a **baseline** (healthy
tissue, label 0) patch at an even index and that patient's **abnormal** patch at the next
odd index (1 mass benign, 2 mass malignant, 3 calcification benign, 4 calcification
malignant). The pair is the patient: it is the grouping key, so both patches of a pair are
on one side of every split, also when only the abnormal patches enter a task.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mammo_core.dataset import Dataset, assemble
from mammo_core.errors import DataError
from mammo_core.images import depth_of, full_scale, resample, to_unit

if TYPE_CHECKING:  # annotations only (the config looks up this module's labels)
    from mammo_core.config import DataConfig

SOURCE_LABELS = {0: "baseline", 1: "mass benign", 2: "mass malignant",
                 3: "calcification benign", 4: "calcification malignant"}
# the label_map keys this collection knows (a typo would silently drop a class)
SOURCE_LABEL_NAMES = tuple(str(k) for k in SOURCE_LABELS)
IMAGES_SUFFIX, LABELS_SUFFIX = "_images.npy", "_labels.npy"


def array_files(root: Path, config: DataConfig) -> dict[str, tuple[Path, Path]]:
    """Returns partition -> (images file, labels file), from the config or the file names.

    Raises DataError naming a missing file, or the folder when it holds no pair.
    """
    if config.npy_files:
        pairs = {part: (root / images, root / labels)
                 for part, (images, labels) in config.npy_files.items()}
    else:
        pairs = {path.name[:-len(IMAGES_SUFFIX)]: (path, path.with_name(
            path.name[:-len(IMAGES_SUFFIX)] + LABELS_SUFFIX))
            for path in sorted(root.glob(f"*{IMAGES_SUFFIX}"))}
    if not pairs:
        raise DataError(f"{root}: no *{IMAGES_SUFFIX} file (CBIS-DDSM NumPy layout: "
                        f"<prefix>{IMAGES_SUFFIX} with <prefix>{LABELS_SUFFIX})")
    for images, labels in pairs.values():
        for path in (images, labels):
            if not path.is_file():
                raise DataError(f"missing file {path} (expected beside {images.name})")
    return pairs


def load_cbis_arrays(root: Path, config: DataConfig) -> Dataset:
    """Returns the patches whose source label `config.label_map` maps, with pair groups.

    With `config.pairs`, each row is a patient's (baseline, abnormal) pair, images shaped
    (N, 2, rows, columns), labelled by the abnormal patch. cases / rois:
    "<partition>/<pair index>" (a patient). Raises DataError naming the file for
    unreadable arrays, mismatched lengths, an odd count, or a pair that is not
    (baseline, abnormal).
    """
    files = sorted(array_files(root, config).items())
    arrays = {partition: _patch_array(images_file) for partition, (images_file, _) in files}
    depth = _collection_depth(arrays.values())
    parts = []
    for partition, (images_file, labels_file) in files:
        images, depth = _unit_images(arrays[partition], images_file, config, depth)
        labels = _labels(labels_file, len(images))
        _check_pairs(labels, labels_file)
        if config.pairs:  # row k: patches 2k (baseline) and 2k + 1 (abnormal)
            images = images.reshape(len(images) // 2, 2, *images.shape[1:])
            labels, step = labels[1::2], 2
        else:
            step = 1
        index = np.flatnonzero([str(label) in config.label_map for label in labels.tolist()])
        parts.append((images[index], np.full(len(index), depth),
                      np.array([config.label_map[str(v)] for v in labels[index].tolist()]),
                      [f"{images_file}#{step * i}" + (f",{step * i + 1}" if step == 2 else "")
                       for i in index],
                      np.array([f"{partition}/{step * i // 2}" for i in index]), partition))
    if not sum(len(p[0]) for p in parts):
        raise DataError(f"{root}: no patch has a label in data.label_map "
                        f"{sorted(config.label_map)}")
    cases = np.concatenate([p[4] for p in parts])
    return assemble(images=np.concatenate([p[0] for p in parts]),
                    bit_depths=np.concatenate([p[1] for p in parts]),
                    labels=np.concatenate([p[2] for p in parts]),
                    paths=tuple(path for p in parts for path in p[3]), cases=cases, rois=cases,
                    partitions=np.concatenate([np.full(len(p[0]), p[5]) for p in parts]),
                    root=root)


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"cannot read NumPy array {path}: {err}") from err


def _patch_array(path: Path) -> np.ndarray:
    """Returns the file's patches as stored, (N, rows, columns); raises DataError naming it."""
    array = _load(path)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise DataError(f"{path}: expected patches shaped (N, rows, columns) or "
                        f"(N, rows, columns, 1), got {array.shape}")
    return array


def _collection_depth(arrays) -> int:
    """Returns the depth the collection's integer patches are read at: 8 for uint8 files,
    else the depth their largest value needs (12-bit scans in 16-bit arrays: 12), one for
    every file, so that no partition is brightened by its own smaller depth."""
    integers = [a for a in arrays if np.issubdtype(a.dtype, np.integer) and a.size]
    if integers and all(a.dtype == np.uint8 for a in integers):
        return 8
    largest = max((int(a.max()) for a in integers), default=0)
    return depth_of(largest) if 0 <= largest <= full_scale(16) else 16


def _unit_images(array: np.ndarray, path: Path, config: DataConfig,
                 depth: int) -> tuple[np.ndarray, int]:
    """Returns the patches as [0, 1] float32 (N, rows, columns) and the depth they were
    read at (`depth` for integers; floats in [0, 1] are taken as they are)."""
    if np.issubdtype(array.dtype, np.integer):
        depth = 8 if array.dtype == np.uint8 else depth
        try:
            units = to_unit(array, depth)
        except DataError as err:
            raise DataError(f"{path}: {err}") from err
    elif np.issubdtype(array.dtype, np.floating) and np.all(np.isfinite(array)) \
            and array.min() >= 0 and array.max() <= 1:
        units, depth = array.astype(np.float32), 16
    else:
        raise DataError(f"{path}: expected 8- or 16-bit integers or floats in [0, 1], "
                        f"got {array.dtype}")
    return _sized(units, path, config), depth


def _sized(units: np.ndarray, path: Path, config: DataConfig) -> np.ndarray:
    if units.shape[1:] == tuple(config.image_size):
        return units
    if not config.resize:
        raise DataError(f"{path}: patches are {units.shape[1]}x{units.shape[2]}, the experiment "
                        f"expects {config.image_size[0]}x{config.image_size[1]}; set "
                        f"data.image_size to [{units.shape[1]}, {units.shape[2]}] or data.resize")
    return np.stack([resample(image, config.image_size) for image in units])


def _labels(path: Path, n_images: int) -> np.ndarray:
    labels = _load(path)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or len(labels) != n_images:
        raise DataError(f"{path}: expected {n_images} labels (one per patch), got shape "
                        f"{labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) and not np.all(labels == np.round(labels)):
        raise DataError(f"{path}: labels must be integers 0..4")
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() > 4:
        raise DataError(f"{path}: labels must lie in 0..4 ({SOURCE_LABELS}), got "
                        f"{labels.min()}..{labels.max()}")
    return labels


def _check_pairs(labels: np.ndarray, path: Path) -> None:
    """Raises DataError unless the labels alternate baseline (0), abnormal (1..4)."""
    if len(labels) % 2:
        raise DataError(f"{path}: {len(labels)} patches, an odd count; expected a baseline "
                        "and an abnormal patch per patient")
    bad = np.flatnonzero((labels[0::2] != 0) | (labels[1::2] == 0))
    if len(bad):
        pair = int(bad[0])
        raise DataError(f"{path}: pair {pair} (indices {2 * pair}, {2 * pair + 1}) has labels "
                        f"{labels[2 * pair]}, {labels[2 * pair + 1]}; expected a baseline (0) "
                        "at the even index and an abnormal patch (1-4) at the odd one")
