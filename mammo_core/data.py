"""Loading data sets with the keys a leakage-free split needs; the class-folder layout.

Class folders: ``<root>/<class>/*`` or ``<root>/<partition>/<class>/*`` (for example the
original ``{Train,Test}/{0,1}``). The published partitions are merged: splitting is the
fold plan's job, grouped by case, so a partition is kept only as metadata. The other
collections' layouts are read by `cbis.py` (NumPy pairs) and `mias.py` (mini-MIAS).
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mammo_core.config import DataConfig
from mammo_core.errors import DataError, FileNameError, ImageError  # noqa: F401  (re-exported)
from mammo_core.images import decode_image, quantize, read, read_image  # noqa: F401


@dataclass(frozen=True)
class Dataset:
    """Images with labels and grouping keys, one row per file.

    images: (N, H, W) float32 intensities in [0, 1], each scaled by its own bit depth.
    bit_depths: (N,) the bits per pixel each file was stored with (8 or 16).
    cases, rois: grouping keys parsed from the file names.
    duplicate_groups: equal ids for images with identical pixels (and shape).
    """

    images: np.ndarray
    bit_depths: np.ndarray
    labels: np.ndarray
    paths: tuple[str, ...]
    cases: np.ndarray
    rois: np.ndarray
    duplicate_groups: np.ndarray
    partitions: np.ndarray
    root: str

    @property
    def bit_depth(self) -> int:
        """Returns the deepest stored bit depth (8 or 16): how raw integers are read."""
        return int(self.bit_depths.max())

    def stored_pixels(self) -> np.ndarray:
        """Returns the images as integers of `bit_depth` (uint8 or uint16).

        For a data set of one depth these are the stored values exactly.
        """
        return quantize(self.images, self.bit_depth)

    def fingerprint(self) -> str:
        """Returns a hash of every image's pixels and label (identifies the data set).

        Hashes the stored integers, so the fingerprint of a data set of one bit depth is
        the same as before images were kept as intensities.
        """
        digest = hashlib.sha256()
        for image, label in zip(self.stored_pixels(), self.labels):
            digest.update(image.tobytes())
            digest.update(int(label).to_bytes(2, "little"))
        return digest.hexdigest()[:16]


def load_dataset(root: str | Path, config: DataConfig) -> Dataset:
    """Returns the collection at `root`, read as `config.layout` says (folders, cbis_npy, mias).

    Raises DataError naming the folder or file at fault (see each layout's loader).
    """
    # the collection readers build their Dataset with `assemble` from this module
    from mammo_core.cbis import load_cbis_arrays
    from mammo_core.mias import load_mias

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder does not exist: {root}")
    loader = {"folders": load_class_folders, "cbis_npy": load_cbis_arrays,
              "mias": load_mias}[config.layout]
    return loader(root, config)


def assemble(images: np.ndarray, bit_depths: np.ndarray, labels: np.ndarray,
             paths: tuple[str, ...], cases: np.ndarray, rois: np.ndarray,
             partitions: np.ndarray, root: Path) -> Dataset:
    """Returns the Dataset of these rows, with duplicate groups computed from the pixels."""
    return Dataset(images=images.astype(np.float32), bit_depths=bit_depths.astype(np.int64),
                   labels=labels.astype(np.int64), paths=tuple(paths), cases=cases, rois=rois,
                   duplicate_groups=duplicate_groups(quantize(images, int(bit_depths.max()))),
                   partitions=partitions, root=str(root))


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
    decoded = [read(path, config.image_size, resize=config.resize) for path, _, _ in entries]
    return assemble(images=np.stack([d.pixels for d in decoded]),  # each scaled by its depth
                    bit_depths=np.array([d.bit_depth for d in decoded]), labels=labels,
                    paths=tuple(str(path) for path, _, _ in entries), cases=cases, rois=rois,
                    partitions=np.array([p for _, _, p in entries]), root=root)


def duplicate_groups(images: np.ndarray) -> np.ndarray:
    """Returns an id per image; images with identical pixels share one id."""
    ids: dict[bytes, int] = {}
    out = np.empty(len(images), dtype=np.int64)
    for i, image in enumerate(images):
        key = hashlib.sha1(image.tobytes()).digest()
        out[i] = ids.setdefault(key, len(ids))
    return out


def summarize(dataset: Dataset, class_names: dict[int, str]) -> dict[str, dict[str, int]]:
    """Returns per class (and overall) counts of images, cases, ROIs and duplicate groups."""
    summary = {}
    for label in sorted(set(dataset.labels.tolist())):
        mask = dataset.labels == label
        summary[class_names.get(label, str(label))] = _counts(dataset, mask)
    summary["all"] = _counts(dataset, np.ones(len(dataset.labels), dtype=bool))
    return summary


def format_summary(summary: dict[str, dict[str, int]]) -> str:
    """Returns the summary as a small aligned text table."""
    columns = ["images", "cases", "rois", "duplicate_groups"]
    width = max(len(name) for name in summary) + 2
    lines = ["class".ljust(width) + "".join(c.rjust(18) for c in columns)]
    for name, counts in summary.items():
        lines.append(name.ljust(width) + "".join(str(counts[c]).rjust(18) for c in columns))
    return "\n".join(lines)


def _counts(dataset: Dataset, mask: np.ndarray) -> dict[str, int]:
    sizes = Counter(dataset.duplicate_groups.tolist())
    dup_ids = {g for g in dataset.duplicate_groups[mask].tolist() if sizes[g] > 1}
    return {"images": int(mask.sum()),
            "cases": len(set(dataset.cases[mask].tolist())),
            "rois": len(set(dataset.rois[mask].tolist())),
            "duplicate_groups": len(dup_ids)}


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


def _group_keys(names: list[str], entries: list, pattern: str | None) -> tuple[np.ndarray, np.ndarray]:
    if pattern is None:
        keys = np.array([str(path) for path, _, _ in entries])
        return keys, keys
    regex = re.compile(pattern)
    cases, rois = [], []
    for (path, _, _), name in zip(entries, names):
        match = regex.match(name)
        if match is None:
            raise FileNameError(f"file name {path} does not match data.filename_pattern "
                                f"{pattern!r}; set the pattern, or null to group per file")
        cases.append(match.group("case"))
        rois.append(match.group("roi"))
    return np.array(cases), np.array(rois)
