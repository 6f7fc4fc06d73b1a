"""mini-MIAS: ``mdbNNN.pgm`` mammograms (1024x1024, 8-bit) described by ``Info.txt``.

Each Info.txt record reads ``mdbNNN tissue class [severity [x y radius]]``: background
tissue F/G/D, class CALC, CIRC, SPIC, MISC, ARCH, ASYM or NORM, severity B/M, and the
abnormality's centre with the origin at the **bottom-left** corner. Some records lack
coordinates, and an image with several abnormalities has several records. Consecutive
images ``mdb(2k-1)`` / ``mdb(2k)`` are the left and right breast of one woman: one group.

Two tasks read the collection: `whole` (each mammogram downscaled to the image size) and
`roi` (patches cut around every abnormality centre, plus tissue patches of normal images).
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mammo_core.dataset import Dataset, assemble
from mammo_core.errors import DataError
from mammo_core.images import read, resample

if TYPE_CHECKING:  # annotations only (the config looks up this module's labels)
    from mammo_core.config import DataConfig

TISSUES = ("F", "G", "D")
CLASSES = ("CALC", "CIRC", "SPIC", "MISC", "ARCH", "ASYM", "NORM")
SOURCE_LABEL_NAMES = CLASSES  # the label_map keys this collection knows
DEFAULT_LABELS = {name: int(name != "NORM") for name in CLASSES}  # normal vs abnormal
_REFERENCE = re.compile(r"mdb\d{3}$")
# a window's centre lies on breast tissue when it is brighter than the film outside the
# breast (near 0 in mini-MIAS); random centres tried per normal image
_TISSUE_LEVEL, _TISSUE_TRIES = 0.15, 200


@dataclass(frozen=True)
class Record:
    """One Info.txt line; `xy` is the abnormality centre as written (origin bottom-left)."""

    reference: str
    tissue: str
    abnormality: str
    severity: str | None
    xy: tuple[int, int] | None
    radius: int | None
    line: int

    def centre(self, height: int) -> tuple[int, int]:
        """Returns the centre as (row, column) from the top-left of an image `height` tall."""
        x, y = self.xy
        return height - 1 - y, x


def parse_info(path: Path) -> list[Record]:
    """Returns the records of an Info.txt, in file order.

    Lines that do not start with a reference (headers, notes, blank lines) are skipped.
    Raises DataError naming the file and line for an unknown tissue or class, and for
    a file without records.
    """
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        raise DataError(f"cannot read the MIAS description {path}: {err}") from err
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens or not _REFERENCE.match(tokens[0]):
            continue
        records.append(_record(tokens, number, path))
    if not records:
        raise DataError(f"{path}: no MIAS record (expected lines such as "
                        "'mdb001 G CIRC B 535 425 197')")
    return records


def _record(tokens: list[str], number: int, path: Path) -> Record:
    where = f"{path}, line {number}"
    if len(tokens) < 3 or tokens[1] not in TISSUES or tokens[2] not in CLASSES:
        raise DataError(f"{where}: expected 'mdbNNN <{'/'.join(TISSUES)}> "
                        f"<{'/'.join(CLASSES)}> [B/M x y radius]', got {' '.join(tokens)!r}")
    severity = tokens[3] if len(tokens) > 3 and tokens[3] in ("B", "M") else None
    numbers = tokens[4:7] if severity else []
    xy = radius = None
    if len(numbers) >= 2 and all(t.isdigit() for t in numbers):
        xy = (int(numbers[0]), int(numbers[1]))
        radius = int(numbers[2]) if len(numbers) > 2 else None
    return Record(tokens[0], tokens[1], tokens[2], severity, xy, radius, number)


def load_mias(root: Path, config: DataConfig) -> Dataset:
    """Returns the `config.mias_task` data set (whole images or ROI patches).

    cases: the woman (mdb(2k-1) and mdb(2k) together); rois: the mammogram. Raises
    DataError naming the file for a missing Info.txt or image, or no usable record.
    """
    labels = config.label_map or DEFAULT_LABELS
    info = root / config.mias_info_file
    if not info.is_file():
        raise DataError(f"missing MIAS description {info} (mini-MIAS layout: mdbNNN.pgm "
                        f"files beside {config.mias_info_file})")
    records = [r for r in parse_info(info) if r.abnormality in labels]
    if not records:
        raise DataError(f"{info}: no record of a class in data.label_map {sorted(labels)}")
    for record in records:
        if not (root / f"{record.reference}.pgm").is_file():
            raise DataError(f"missing image {root / (record.reference + '.pgm')} "
                            f"(listed on line {record.line} of {info})")
    cut = _whole_images if config.mias_task == "whole" else _roi_patches
    rows = cut(root, records, labels, config)
    return assemble(images=np.stack([r[0] for r in rows]),
                    bit_depths=np.array([r[1] for r in rows]), labels=np.array([r[2] for r in rows]), paths=tuple(r[3] for r in rows),
                    cases=np.array([woman(r[4]) for r in rows]),
                    rois=np.array([r[4] for r in rows]),
                    partitions=np.full(len(rows), ""), root=root)


def woman(reference: str) -> str:
    """Returns the group of a mammogram: mdb001 and mdb002 -> "woman001"."""
    return f"woman{(int(reference[3:]) + 1) // 2:03d}"


def _whole_images(root: Path, records: list[Record], labels: dict[str, int],
                  config: DataConfig) -> list[tuple]:
    """Returns (pixels, depth, label, path, reference) per mammogram, downscaled.

    An image with several records takes the highest label among them.
    """
    label_of: dict[str, int] = {}
    for record in records:
        label_of[record.reference] = max(label_of.get(record.reference, -1),
                                         labels[record.abnormality])
    rows = []
    for reference, label in sorted(label_of.items()):
        path = root / f"{reference}.pgm"
        image = read(path, config.image_size, resize=True)  # 1024 -> image_size
        rows.append((image.pixels, image.bit_depth, label, str(path), reference))
    return rows


def _roi_patches(root: Path, records: list[Record], labels: dict[str, int],
                 config: DataConfig) -> list[tuple]:
    """Returns (pixels, depth, label, path#where, reference) per patch.

    One rule cuts every class's windows: `roi_patch_size` pixels a side, centred on breast
    tissue (`_on_tissue`), shifted to lie inside the image. An abnormal record's window is
    centred on its abnormality; a normal image gives `normal_patches_per_image` windows at
    seeded random tissue centres. Abnormal records without coordinates are skipped (they
    locate nothing); one whose centre lies outside its image is a DataError naming the
    record, and one centred on the dark film is left out with a warning.
    """
    rows, off_tissue = [], []
    for record in records:
        normal = record.abnormality == "NORM"
        if record.xy is None and not normal:
            continue
        path = root / f"{record.reference}.pgm"
        image = read(path, None)
        if normal:
            centres = _tissue_centres(image.pixels, config, seed=int(record.reference[3:]))
        else:
            centres = [_abnormality_centre(record, image.pixels.shape, root)]
            if not _on_tissue(image.pixels, *centres[0], config.roi_patch_size):
                off_tissue.append(f"{record.reference} (line {record.line})")
                continue
        for row, col in centres:
            patch = resample(_window(image.pixels, row, col, config.roi_patch_size),
                             config.image_size)
            rows.append((patch, image.bit_depth, labels[record.abnormality],
                         f"{path}#{row},{col}", record.reference))
    if off_tissue:
        warnings.warn(f"{len(off_tissue)} abnormal record(s) centred off the breast left out: "
                      f"{', '.join(off_tissue[:5])}", stacklevel=2)
    if not rows:
        raise DataError(f"{root}: no record with coordinates and no normal image to cut "
                        "patches from")
    return rows


def _abnormality_centre(record: Record, shape: tuple[int, int], root: Path) -> tuple[int, int]:
    """Returns the record's centre as (row, column); raises DataError naming the record if
    it lies outside the image (it was silently clipped to a corner patch before)."""
    row, col = record.centre(shape[0])
    if not (0 <= row < shape[0] and 0 <= col < shape[1]):
        raise DataError(f"{root / 'Info.txt'}, line {record.line}: {record.reference}'s "
                        f"centre (x {record.xy[0]}, y {record.xy[1]}) lies outside its "
                        f"{shape[1]}x{shape[0]} image")
    return row, col


def _window(pixels: np.ndarray, row: int, col: int, size: int) -> np.ndarray:
    """Returns the size x size window centred at (row, col), shifted to lie in the image."""
    size = min(size, *pixels.shape)
    top = int(np.clip(row - size // 2, 0, pixels.shape[0] - size))
    left = int(np.clip(col - size // 2, 0, pixels.shape[1] - size))
    return pixels[top:top + size, left:left + size]


def _on_tissue(pixels: np.ndarray, row: int, col: int, size: int) -> bool:
    """Whether the window's centre lies on breast tissue: the mean of its central
    eighth (a side of size / 8) is above the dark film's level."""
    return float(_window(pixels, row, col, max(size // 8, 1)).mean()) >= _TISSUE_LEVEL


def _tissue_centres(pixels: np.ndarray, config: DataConfig, seed: int) -> list[tuple[int, int]]:
    """Returns up to `normal_patches_per_image` seeded random centres on breast tissue, in
    the order drawn (no preference for bright windows: the abnormal ones have none)."""
    rng = np.random.default_rng(seed)
    centres = []
    for _ in range(_TISSUE_TRIES):
        row = int(rng.integers(0, pixels.shape[0]))
        col = int(rng.integers(0, pixels.shape[1]))
        if _on_tissue(pixels, row, col, config.roi_patch_size):
            centres.append((row, col))
            if len(centres) == config.normal_patches_per_image:
                break
    return centres
