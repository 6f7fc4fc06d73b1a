"""Small copies of the public collections in their original layouts, written by test code.

None of these collections can be downloaded on the build machines, so the loaders are
tested (and the studies' quick pipelines run) on generated files laid out exactly as the
releases are: CBIS-DDSM NumPy pairs, CBIS-DDSM mass/calcification class folders, and
mini-MIAS .pgm files with an Info.txt. Classes differ in a way a small CNN can learn.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def _blob(size: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    rows, cols = np.ogrid[:size[0], :size[1]]
    return np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * radius ** 2))


def _dots(rng, size: tuple[int, int], count: int) -> np.ndarray:
    out = np.zeros(size)
    rows = rng.integers(size[0] // 4, 3 * size[0] // 4, count)
    cols = rng.integers(size[1] // 4, 3 * size[1] // 4, count)
    out[rows, cols] = 1.0
    return out


def abnormality(rng, size: tuple[int, int], label: int) -> np.ndarray:
    """Returns [0, 1] tissue with a mass (labels 1, 2: a broad blob) or calcifications
    (3, 4: bright dots); malignant ones (2, 4) are larger / more numerous."""
    tissue = 0.3 + 0.05 * rng.standard_normal(size)
    if label in (1, 2):
        tissue += (0.25 if label == 1 else 0.4) * _blob(size, (size[0] // 2, size[1] // 2),
                                                          size[0] / (6 if label == 1 else 4))
    elif label in (3, 4):
        tissue += 0.6 * _dots(rng, size, 4 if label == 3 else 12)
    return np.clip(tissue, 0, 1)


def write_cbis_arrays(root: Path, patients: dict[str, int] | None = None,
                      size: tuple[int, int] = (48, 48), seed: int = 0) -> Path:
    """Writes `<partition>_images.npy` (uint16) / `<partition>_labels.npy` pairs.

    Each patient: a baseline patch (label 0) at an even index, the abnormal patch
    (labels 1-4 in turn) at the next odd one. `patients`: partition -> count.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for partition, count in (patients or {"train": 24, "test": 8}).items():
        images, labels = [], []
        for patient in range(count):
            for label in (0, 1 + patient % 4):
                images.append(np.rint(abnormality(rng, size, label) * 65535).astype(np.uint16))
                labels.append(label)
        np.save(root / f"{partition}_images.npy", np.stack(images))
        np.save(root / f"{partition}_labels.npy", np.array(labels, dtype=np.int64))
    return root


def write_cbis_folders(root: Path, per_folder: int = 10, seed: int = 0) -> Path:
    """Writes mass_{train,test} / calc_{train,test} folders of PNG and JPEG files of
    assorted sizes, some stored as RGB with equal channels."""
    rng = np.random.default_rng(seed)
    sizes = [(64, 64), (80, 72), (96, 110)]
    for kind, label in (("mass", 1), ("calc", 4)):
        for part in ("train", "test"):
            folder = root / f"{kind}_{part}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_folder):
                pixels = np.rint(abnormality(rng, sizes[i % 3], label) * 255).astype(np.uint8)
                image = Image.fromarray(pixels)
                if i % 2:
                    image.convert("RGB").save(folder / f"{kind}_{part}_{i:03d}.jpg", quality=95)
                else:
                    image.save(folder / f"{kind}_{part}_{i:03d}.png")
    return root


MIAS_SIZE = (1024, 1024)


def _mammogram(rng, reference: int) -> np.ndarray:
    """Returns a breast-shaped [0, 1] image: a bright half-disc on the dark film."""
    rows, cols = np.ogrid[:MIAS_SIZE[0], :MIAS_SIZE[1]]
    side = 0 if reference % 2 else MIAS_SIZE[1]  # left / right breast face opposite ways
    breast = ((rows - 512) ** 2 + (cols - side) ** 2) < 600 ** 2
    return np.where(breast, 0.45 + 0.04 * rng.standard_normal(MIAS_SIZE), 0.02)


# (reference, tissue, class, severity, x, y, radius); None where Info.txt has nothing
MIAS_RECORDS = [
    ("mdb001", "G", "CIRC", "B", 300, 600, 60), ("mdb002", "G", "NORM", None, None, None, None),
    ("mdb003", "D", "NORM", None, None, None, None), ("mdb004", "D", "CALC", "M", 700, 300, 30),
    ("mdb005", "F", "CIRC", "B", 250, 450, 40), ("mdb005", "F", "CIRC", "B", 300, 560, 26),
    ("mdb006", "F", "NORM", None, None, None, None), ("mdb007", "G", "SPIC", "M", 420, 520, 50),
    ("mdb008", "G", "NORM", None, None, None, None), ("mdb009", "F", "CALC", "B", None, None, None),
]


def write_mias(root: Path, women: int = 12, seed: int = 0) -> Path:
    """Writes mdbNNN.pgm (1024x1024, 8-bit P5) and an Info.txt with the awkward lines:
    a header, records without coordinates, an image on two lines, CRLF endings."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    records = list(MIAS_RECORDS)
    for n in range(10, 2 * women + 1):  # more images: alternating normal / abnormal
        if n % 2:
            records.append((f"mdb{n:03d}", "F", ("CALC", "CIRC")[n % 4 == 1], "B",
                            300 + 7 * n, 400 + 5 * n, 30))
        else:
            records.append((f"mdb{n:03d}", "D", "NORM", None, None, None, None))
    images: dict[str, np.ndarray] = {}
    for ref, _, cls, _, x, y, radius in records:
        image = images.setdefault(ref, _mammogram(rng, int(ref[3:])))
        if cls == "NORM":
            continue
        centre = (MIAS_SIZE[0] - 1 - (y if y is not None else 500), x if x is not None else 300)
        image += 0.5 * _blob(MIAS_SIZE, centre, (radius or 30) / 2)
    for ref, image in images.items():
        pixels = np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"{ref}.pgm")  # Pillow writes binary P5
    lines = ["Mini-MIAS database: reference, tissue, class, severity, x, y, radius", ""]
    for ref, tissue, cls, severity, x, y, radius in records:
        fields = [ref, tissue, cls] + [str(v) for v in (severity, x, y, radius) if v is not None]
        lines.append(" ".join(fields) + " ")
    (root / "Info.txt").write_bytes("\r\n".join(lines).encode())
    return root


def write_microcal_partitions(root: Path, cases: int = 24, shared_cases: int = 3,
                              copies: int = 2, seed: int = 0) -> tuple[Path, dict[str, int]]:
    """Writes the microcal tarball's layout, `{Train,Test}/{0,1}/<case>u1_1_1_1.pgm_<k>.png`
    (8-bit, 60x60, two crops per case), with a known overlap between the partitions: the
    last quarter of the cases are Test; `shared_cases` cases before them have one crop on
    each side; `copies` Test images are pixel-identical to a Train image stored under
    another case (as in the real data). Returns (root, the Test side's expected leak
    counts: images sharing a case, an ROI, their pixels)."""
    rng = np.random.default_rng(seed)
    first_test = cases - cases // 4
    shared = range(first_test - shared_cases, first_test)
    train: list[tuple[int, np.ndarray]] = []
    leaks = {"case": 0, "roi": 0, "pixels": 0}
    for case in range(cases):
        label = case % 2
        for crop in (1, 2):
            on_test = case >= first_test or (case in shared and crop == 2)
            pixels = np.clip(rng.normal(90, 12, (60, 60)), 0, 255).astype(np.uint8)
            if label:
                pixels[28:31, 28:31] = 240
            if case >= first_test and crop == 1 and leaks["pixels"] < copies:
                pixels = [p for lab, p in train if lab == label][leaks["pixels"]].copy()
                leaks["pixels"] += 1
            if case in shared and on_test:
                leaks["case"] += 1
                leaks["roi"] += 1
            if not on_test:
                train.append((label, pixels))
            folder = root / ("Test" if on_test else "Train") / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / f"{1000 + case:04d}u1_1_1_1.pgm_{crop}.png")
    return root, leaks
