"""Loading class-folder image data sets with the keys a leakage-free split needs.

Layouts: ``<root>/<class>/*`` or ``<root>/<partition>/<class>/*`` (for example the
original ``{Train,Test}/{0,1}``). The published partitions are merged: splitting is the
fold plan's job, grouped by case, so a partition is kept only as metadata.
"""
from __future__ import annotations

import hashlib
import io
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mammo_core.config import DataConfig


class DataError(ValueError):
    """The data set is unusable; the message names the file or folder at fault."""


@dataclass(frozen=True)
class Dataset:
    """Images with labels and grouping keys, one row per file.

    images: (N, H, W) uint8 or uint16 array, as stored on disk.
    cases, rois: grouping keys parsed from the file names.
    duplicate_groups: equal ids for images with identical pixels (and shape).
    """

    images: np.ndarray
    labels: np.ndarray
    paths: tuple[str, ...]
    cases: np.ndarray
    rois: np.ndarray
    duplicate_groups: np.ndarray
    partitions: np.ndarray
    root: str

    @property
    def bit_depth(self) -> int:
        """Returns the bits per pixel of the stored images (8 or 16)."""
        return 8 * self.images.dtype.itemsize

    def fingerprint(self) -> str:
        """Returns a hash of every image's pixels and label (identifies the data set)."""
        digest = hashlib.sha256()
        for image, label in zip(self.images, self.labels):
            digest.update(image.tobytes())
            digest.update(int(label).to_bytes(2, "little"))
        return digest.hexdigest()[:16]


def load_dataset(root: str | Path, config: DataConfig) -> Dataset:
    """Returns every image under `root` with its label, case, ROI and duplicate group.

    Raises DataError naming the folder or file for a missing or empty class folder
    (so also for a single class), an unreadable or truncated file, a wrong size or a bad file name.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder does not exist: {root}")
    entries = []  # (path, label, partition)
    for partition, base in _partitions(root, config):
        entries += _class_files(base, partition, config)
    # Every class folder must exist and hold files, and the config maps them to two or
    # more labels, so a single-class data set is caught by the folder checks.
    labels = np.array([label for _, label, _ in entries], dtype=np.int64)
    images = np.stack([read_image(path, config.image_size) for path, _, _ in entries])
    names = [path.name for path, _, _ in entries]
    cases, rois = _group_keys(names, entries, config.filename_pattern)
    return Dataset(images=images, labels=labels,
                   paths=tuple(str(path) for path, _, _ in entries),
                   cases=cases, rois=rois,
                   duplicate_groups=duplicate_groups(images),
                   partitions=np.array([p for _, _, p in entries]), root=str(root))


def read_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Returns one grayscale image as uint8 or uint16, shape `size` (rows, columns).

    Raises DataError naming the file when it cannot be decoded, is truncated, is not
    grayscale or has another size.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"cannot read image {path}: {err}") from err
    return decode_image(data, size, str(path))


def decode_image(data: bytes, size: tuple[int, int], name: str,
                 resize: bool = False) -> np.ndarray:
    """Returns encoded image bytes (PNG, PGM, TIFF) as a uint8 or uint16 array of `size`.

    With `resize`, an image of another size is resampled (bilinear) instead of refused.
    Raises DataError naming `name` when the bytes are not a complete grayscale image.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decodes now, so truncated files fail here
            array = _gray_array(img, name)
    except UnidentifiedImageError as err:
        raise DataError(f"cannot read image {name}: not a PNG, PGM or TIFF image") from err
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"cannot read image {name}: {err}") from err
    if array.shape == tuple(size):
        return array
    if resize:
        resampled = Image.fromarray(array.astype(np.float32)).resize(
            (size[1], size[0]), Image.Resampling.BILINEAR)
        top = np.iinfo(array.dtype).max
        return np.clip(np.rint(np.asarray(resampled)), 0, top).astype(array.dtype)
    raise DataError(f"image {name} has size {array.shape[0]}x{array.shape[1]} "
                    f"(rows x columns), the experiment expects {size[0]}x{size[1]}")


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
    for folder_name, label in config.classes.items():
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


def _gray_array(img: Image.Image, path: Path | str) -> np.ndarray:
    if img.mode == "L":
        return np.asarray(img, dtype=np.uint8)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(img)
        if array.min() < 0 or array.max() > np.iinfo(np.uint16).max:
            raise DataError(f"image {path} has values outside the 16-bit range")
        return array.astype(np.uint16)
    raise DataError(f"image {path} has mode {img.mode}; expected 8- or 16-bit grayscale")


def _group_keys(names: list[str], entries: list, pattern: str | None) -> tuple[np.ndarray, np.ndarray]:
    if pattern is None:
        keys = np.array([str(path) for path, _, _ in entries])
        return keys, keys
    regex = re.compile(pattern)
    cases, rois = [], []
    for (path, _, _), name in zip(entries, names):
        match = regex.match(name)
        if match is None:
            raise DataError(f"file name {path} does not match data.filename_pattern "
                            f"{pattern!r}; set the pattern, or null to group per file")
        cases.append(match.group("case"))
        rois.append(match.group("roi"))
    return np.array(cases), np.array(rois)
