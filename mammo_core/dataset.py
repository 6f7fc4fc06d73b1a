"""The data set every layout's reader returns: images with the keys a leakage-free split
needs (labels, cases, ROIs, duplicate groups), and its summaries."""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from mammo_core.images import quantize


@dataclass(frozen=True)
class Dataset:
    """Images with labels and grouping keys, one row per file.

    images: (N, H, W) float32 intensities in [0, 1], each scaled by its own bit depth.
    bit_depths: (N,) the bits per pixel each file was stored with (8 or 16).
    cases, rois: grouping keys parsed from the file names.
    duplicate_groups: equal ids for images with identical pixels (and shape).
    notes: what the reader wants logged beside the fingerprint (e.g. DICOM pixel spacing).
    overview: a full image and its ROI mask at display size, (2, H, W), when the
    collection has them (CBIS DICOM), for the data figures.
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
    notes: Mapping[str, str] = field(default_factory=dict)
    overview: np.ndarray | None = None

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


def assemble(images: np.ndarray, bit_depths: np.ndarray, labels: np.ndarray,
             paths: tuple[str, ...], cases: np.ndarray, rois: np.ndarray,
             partitions: np.ndarray, root: Path, notes: Mapping[str, str] | None = None,
             overview: np.ndarray | None = None) -> Dataset:
    """Returns the Dataset of these rows, with duplicate groups computed from the pixels."""
    return Dataset(images=images.astype(np.float32), bit_depths=bit_depths.astype(np.int64),
                   labels=labels.astype(np.int64), paths=tuple(paths), cases=cases, rois=rois,
                   duplicate_groups=duplicate_groups(quantize(images, int(bit_depths.max()))),
                   partitions=partitions, root=str(root), notes=dict(notes or {}),
                   overview=overview)


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
