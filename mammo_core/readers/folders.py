"""Class folders: ``<root>/<class>/*`` or ``<root>/<partition>/<class>/*`` (for example
microcal's original ``{Train,Test}/{0,1}``, or CBIS-DDSM's ``{mass,calc}_{train,test}``).

The published partitions are merged: splitting is the fold plan's job, grouped by case, so
a partition is kept only as metadata.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mammo_core.dataset import Dataset, assemble
from mammo_core.errors import DataError, FileNameError
from mammo_core.images import common_depth, read

if TYPE_CHECKING:  # annotations only
    from mammo_core.config import DataConfig


def load_class_folders(root: Path, config: DataConfig) -> Dataset:
    """Returns every image under `root` with its label, case, ROI and duplicate group.

    Raises DataError naming the folder or file for a missing or empty class folder
    (so also for a single class), an unreadable or truncated file or a wrong size, and
    FileNameError (before decoding anything) for a name the case pattern does not match.
    """
    entries = []  # (path, label, partition)
    for partition, base in _partitions(root, config):
        entries += _class_files(base, partition, config)
    # Every class folder must exist and hold files, and the config maps them to two or
    # more labels, so a single-class data set is caught by the folder checks.
    labels = np.array([label for _, label, _ in entries], dtype=np.int64)
    names = [path.name for path, _, _ in entries]
    cases, rois = _group_keys(names, entries, config.filename_pattern)  # before decoding
    # one scale for the collection's 16-bit files: the depth their deepest values need
    decoded = common_depth([read(path, config.image_size, resize=config.resize)
                            for path, _, _ in entries])
    return assemble(images=np.stack([d.pixels for d in decoded]),  # each scaled by its depth
                    bit_depths=np.array([d.bit_depth for d in decoded]), labels=labels,
                    paths=tuple(str(path) for path, _, _ in entries), cases=cases, rois=rois,
                    partitions=np.array([p for _, _, p in entries]), root=root)


def _partitions(root: Path, config: DataConfig) -> list[tuple[str, Path]]:
    """Returns (partition name, folder holding the class folders) pairs."""
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if any(p.name in config.classes for p in subdirs):
        return [("", root)]
    nested = [p for p in subdirs if any((p / c).is_dir() for c in config.classes)]
    if not nested:
        raise DataError(f"{root}: no class folder {sorted(config.classes)} found, "
                        "neither directly nor one level down (e.g. Train/0)")
    return [(p.name, p) for p in nested]


def _class_files(base: Path, partition: str, config: DataConfig) -> list[tuple[Path, int, str]]:
    entries = []
    # sorted: a config logged with sorted keys must read the files in the same order
    for folder_name, label in sorted(config.classes.items()):
        folder = base / folder_name
        if not folder.is_dir():
            raise DataError(f"class folder missing: {folder}")
        files = sorted(p for p in folder.iterdir()
                       if p.is_file() and p.suffix.lower() in config.extensions)
        if not files:
            raise DataError(f"class folder is empty: {folder} "
                            f"(no {'/'.join(config.extensions)} files)")
        entries += [(path, label, partition) for path in files]
    return entries


def cases_of(names: list[str], pattern: str | None) -> np.ndarray | None:
    """Returns each file name's case by the study's `pattern`, or None when there is no
    pattern or a name does not match it (the files' cases are then unknown)."""
    matches = _matches(names, pattern) if pattern is not None else []
    if not matches or any(m is None for m in matches):
        return None
    return np.array([m.group("case") for m in matches])


def _matches(names: list[str], pattern: str) -> list[re.Match | None]:
    """Returns the study's file-name pattern matched at the start of each name."""
    regex = re.compile(pattern)
    return [regex.match(name) for name in names]


def _group_keys(names: list[str], entries: list, pattern: str | None) -> tuple[np.ndarray, np.ndarray]:
    if pattern is None:
        keys = np.array([str(path) for path, _, _ in entries])
        return keys, keys
    cases, rois = [], []
    for (path, _, _), match in zip(entries, _matches(names, pattern)):
        if match is None:
            raise FileNameError(f"file name {path} does not match data.filename_pattern "
                                f"{pattern!r}; set the pattern, or null to group per file")
        cases.append(match.group("case"))
        rois.append(match.group("roi"))
    return np.array(cases), np.array(rois)
