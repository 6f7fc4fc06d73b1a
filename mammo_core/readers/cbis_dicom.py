"""CBIS-DDSM as the archive distributes it: DICOM files plus the case-description CSVs.

The archive's download tool writes ``<PatientID>/<study>/<series>/1-1.dcm`` folders whose
names are not the paths the CSVs print, so files are found by walking the folder and
reading their tags: ``PatientID`` (``Mass-Training_P_00001_LEFT_CC`` for a full mammogram,
``..._LEFT_CC_1`` for abnormality 1's cropped image and ROI mask). A crop is told from a
mask by its content (a mask holds two values), never by its name or series, which the
archive sometimes swaps. Rows of ``{mass,calc}_case_description_{train,test}_set.csv``
(their columns differ slightly: ``breast_density`` vs ``breast density``) give each
abnormality its type and pathology; ``data.label_map`` maps either the abnormality type
(``mass``, ``calcification``) or the pathology (``BENIGN``, ``BENIGN_WITHOUT_CALLBACK``,
``MALIGNANT``) to the task's labels, so where ``BENIGN_WITHOUT_CALLBACK`` goes is a config
choice.

Tasks (`data.cbis_task`): `crop` (the archive's cropped lesions), `roi` (a square around
each mask's box plus `roi_margin`, cut from the full mammogram) and `whole` (each
mammogram downscaled right after decoding, labelled by its highest-labelled abnormality).
The group is the patient: every view and abnormality of one woman on one side of every
split. The partition (train/test) is the CSV's, kept for the published protocol.
"""
from __future__ import annotations

import csv
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mammo_core import dicom
from mammo_core.dataset import Dataset, assemble
from mammo_core.errors import DataError, ImageError
from mammo_core.images import MAX_PIXELS, resample

if TYPE_CHECKING:  # annotations only
    from mammo_core.config import DataConfig

ABNORMALITIES = ("mass", "calcification")
PATHOLOGIES = ("BENIGN", "BENIGN_WITHOUT_CALLBACK", "MALIGNANT")
SOURCE_LABEL_NAMES = ABNORMALITIES + PATHOLOGIES
GROUP_WORDS = ("patients", "abnormalities")  # what `cases` and `rois` are here
_PATIENT_ID = re.compile(r"(?P<kind>Mass|Calc)-(?P<partition>Training|Test)_(?P<patient>P_\d+)_"
                         r"(?P<side>LEFT|RIGHT)_(?P<view>CC|MLO)(?:_(?P<abnormality>\d+))?$")
_REQUIRED = ("patient_id", "left or right breast", "image view", "abnormality id",
             "abnormality type", "pathology")
_SHOWN = 5  # problems listed one per line before "... and N more"
_OVERVIEW_SIDE = 512


def check_label_map(labels: dict[str, int]) -> None:
    """Raises ValueError unless the map's keys are all abnormality types or all pathologies."""
    if not (set(labels) <= set(ABNORMALITIES) or set(labels) <= set(PATHOLOGIES)):
        raise ValueError(f"'data.label_map' must map abnormality types {list(ABNORMALITIES)} "
                         f"or pathologies {list(PATHOLOGIES)}, not both: got {sorted(labels)}")


@dataclass(frozen=True)
class CaseRow:
    """One case-description row: an abnormality seen on one view of one breast."""

    source: str  # "<csv file>, line <n>"
    kind: str  # Mass or Calc
    partition: str  # Training or Test
    patient: str
    side: str
    view: str
    abnormality: int
    abnormality_type: str
    pathology: str

    @property
    def image_key(self) -> str:
        """Returns the full mammogram's PatientID: Mass-Training_P_00001_LEFT_CC."""
        return f"{self.kind}-{self.partition}_{self.patient}_{self.side}_{self.view}"

    @property
    def lesion_key(self) -> str:
        """Returns the PatientID of the abnormality's crop and mask: ..._LEFT_CC_1."""
        return f"{self.image_key}_{self.abnormality}"


@dataclass(frozen=True)
class DicomFile:
    path: Path
    header: dicom.DicomHeader
    key: str  # the PatientID: image key (full mammogram) or lesion key (crop or mask)
    is_full: bool


def read_case_descriptions(root: Path, config: DataConfig) -> list[CaseRow]:
    """Returns every row of the case-description CSVs (both flavours), in file order.

    Raises DataError naming the file (and line) for no CSV, a missing column, an unknown
    pathology or abnormality type, or a side/view/id that is not the archive's.
    """
    paths = ([root / p for p in config.case_descriptions] if config.case_descriptions
             else sorted(root.rglob("*case_description*.csv")))
    if not paths:
        raise DataError(f"{root}: no case-description CSV (*case_description*.csv, e.g. "
                        "mass_case_description_train_set.csv); set data.case_descriptions")
    rows = []
    for path in paths:
        if not path.is_file():
            raise DataError(f"missing case-description CSV {path}")
        rows += _csv_rows(path)
    return rows


def _csv_rows(path: Path) -> list[CaseRow]:
    partition = "Test" if "test" in path.name.lower() else "Training"
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.reader(handle)
        header = [_column(c) for c in next(reader, [])]
        missing = [c for c in _REQUIRED if c not in header]
        if missing:
            raise DataError(f"{path}: no column {missing} (a CBIS-DDSM case-description CSV "
                            f"has {', '.join(_REQUIRED)}, ...)")
        at = {c: header.index(c) for c in _REQUIRED}
        return [_row({c: values[i].strip() if i < len(values) else "" for c, i in at.items()},
                     f"{path}, line {number}", partition)
                for number, values in enumerate(reader, 2) if any(v.strip() for v in values)]


def _column(name: str) -> str:
    """Returns a column name as both flavours agree on it (breast_density = breast density)."""
    name = re.sub(r"[\s_]+", " ", name.strip().lower())
    return "patient_id" if name == "patient id" else name


def _row(values: dict[str, str], source: str, partition: str) -> CaseRow:
    abnormality_type, pathology = values["abnormality type"].lower(), values["pathology"].upper()
    problems = []
    if abnormality_type not in ABNORMALITIES:
        problems.append(f"abnormality type {values['abnormality type']!r} (expected "
                        f"{' or '.join(ABNORMALITIES)})")
    if pathology not in PATHOLOGIES:
        problems.append(f"pathology {values['pathology']!r} (expected one of "
                        f"{', '.join(PATHOLOGIES)})")
    side, view = values["left or right breast"].upper(), values["image view"].upper()
    if side not in ("LEFT", "RIGHT") or view not in ("CC", "MLO"):
        problems.append(f"side/view {side!r}/{view!r} (expected LEFT/RIGHT and CC/MLO)")
    if not values["abnormality id"].isdigit() or not re.fullmatch(r"P_\d+", values["patient_id"]):
        problems.append(f"patient {values['patient_id']!r} / abnormality id "
                        f"{values['abnormality id']!r} (expected P_00001 and a number)")
    if problems:
        raise DataError(f"{source}: " + "; ".join(problems))
    kind = "Mass" if abnormality_type == "mass" else "Calc"
    return CaseRow(source, kind, partition, values["patient_id"], side, view,
                   int(values["abnormality id"]), abnormality_type, pathology)


def scan(root: Path) -> tuple[list[DicomFile], list[str]]:
    """Returns the DICOM files under `root` (headers only, no pixels) and one line per
    file that cannot be one of the archive's (unreadable, or a PatientID not of its form)."""
    found, unusable = [], []
    for path in sorted(root.rglob("*.dcm")):
        try:
            header = dicom.read_header(path)
        except ImageError as err:
            unusable.append(str(err))
            continue
        match = _PATIENT_ID.match(header.patient_id)
        if match is None:
            unusable.append(f"{path}: PatientID {header.patient_id!r} is not the archive's "
                            "(e.g. Mass-Training_P_00001_LEFT_CC[_1])")
            continue
        found.append(DicomFile(path, header, header.patient_id, match["abnormality"] is None))
    return found, unusable


def load_cbis_dicom(root: Path, config: DataConfig) -> Dataset:
    """Returns the `config.cbis_task` data set of the archive at `root`.

    cases: the patient; rois: the abnormality (whole: the mammogram); partitions: train /
    test as the CSVs say. Rows of labels `data.label_map` leaves out are skipped. Rows
    without their files and files no row names are reported (counts, then the first few);
    DataError unless `data.allow_missing`.
    """
    rows = read_case_descriptions(root, config)
    files, unusable = scan(root)
    full = {f.key: f for f in files if f.is_full}
    lesion_files: dict[str, list[DicomFile]] = defaultdict(list)
    for f in files:
        if not f.is_full:
            lesion_files[f.key].append(f)
    report = MissingReport(unusable + _unnamed(files, rows))
    labelled = [(row, _label(row, config.label_map)) for row in rows]
    labelled = [(row, label) for row, label in labelled if label is not None]
    cut = {"crop": _crops, "roi": _roi_patches, "whole": _whole_images}[config.cbis_task]
    out = cut(labelled, full, lesion_files, config, report)
    report.check(config.allow_missing, root)
    if not out:
        raise DataError(f"{root}: no {config.cbis_task} image of a label in data.label_map "
                        f"{sorted(config.label_map)}")
    return assemble(images=np.stack([o[0] for o in out]), bit_depths=np.array([o[1] for o in out]),
                    labels=np.array([o[2] for o in out]), paths=tuple(o[3] for o in out),
                    cases=np.array([o[4] for o in out]), rois=np.array([o[5] for o in out]),
                    partitions=np.array([o[6] for o in out]), root=root,
                    notes=dicom.tags_note([f.header for f in files])
                    | {"rows_left_out": str(len(report.missing))},
                    overview=_overview(labelled, full, lesion_files))


def _label(row: CaseRow, label_map: dict[str, int]) -> int | None:
    value = row.abnormality_type if set(label_map) <= set(ABNORMALITIES) else row.pathology
    return label_map.get(value)


def _unnamed(files: list[DicomFile], rows: list[CaseRow]) -> list[str]:
    keys = {r.image_key for r in rows} | {r.lesion_key for r in rows}
    return [f"{f.path}: PatientID {f.key} is named by no case-description row"
            for f in files if f.key not in keys]


class MissingReport:
    """Collects rows without files and files without rows; `check` reports them."""

    def __init__(self, unnamed: list[str]):
        self.unnamed, self.missing = unnamed, []

    def row(self, row: CaseRow, what: str) -> None:
        self.missing.append(f"{row.source}: {row.lesion_key}: no {what} file")

    def check(self, allowed: bool, root: Path) -> None:
        """Raises DataError listing the problems unless `allowed`; then warns with them."""
        parts = [_listed(self.missing, "case-description row(s) without their files"),
                 _listed(self.unnamed, "DICOM file(s) that no case-description row names")]
        text = "\n".join(p for p in parts if p)
        if not text:
            return
        if not allowed:
            raise DataError(f"{root}: the archive and its CSVs disagree:\n{text}\nset "
                            "data.allow_missing: true to go on without them")
        warnings.warn(f"{root}: going on without (data.allow_missing):\n{text}", stacklevel=3)


def _listed(lines: list[str], what: str) -> str:
    if not lines:
        return ""
    more = f"\n  ... and {len(lines) - _SHOWN} more" if len(lines) > _SHOWN else ""
    return f"{len(lines)} {what}:\n" + "\n".join(f"  {line}" for line in lines[:_SHOWN]) + more


def _decode(f: DicomFile, config: DataConfig, size: tuple[int, int] | None = None
            ) -> tuple[np.ndarray, int]:
    pixels, depth, _ = dicom.decode_dicom(f.path, str(f.path), max_pixels=MAX_PIXELS,
                                          voi=config.dicom_voi, downscale_to=size)
    return pixels, depth


def is_mask(pixels: np.ndarray) -> bool:
    """Returns whether an image is an ROI mask: at most two values, both present."""
    return len(np.unique(pixels)) <= 2


def _crop_and_mask(candidates: list[DicomFile], config: DataConfig, want: str
                   ) -> tuple[DicomFile, np.ndarray, int] | None:
    """Returns the abnormality's file of kind `want` ("crop" or "mask"), its pixels at full
    size and depth, told by content; tries the likelier first (crops are the smaller)."""
    order = sorted(candidates, key=lambda f: f.header.pixels, reverse=want == "mask")
    for f in order:
        pixels, depth = _decode(f, config)
        if is_mask(pixels) == (want == "mask"):
            return f, pixels, depth
    return None


def _crops(labelled, full, lesion_files, config: DataConfig, report: MissingReport) -> list:
    out = []
    for row, label in labelled:
        found = _crop_and_mask(lesion_files.get(row.lesion_key, []), config, "crop")
        if found is None:
            report.row(row, "cropped image")
            continue
        f, pixels, depth = found
        out.append(_item(resample(pixels, config.image_size), depth, label, f.path, row,
                         row.lesion_key))
    return out


def _roi_patches(labelled, full, lesion_files, config: DataConfig, report: MissingReport) -> list:
    out, last = [], (None, None)
    for row, label in sorted(labelled, key=lambda item: item[0].image_key):  # one decode per image
        mask = _crop_and_mask(lesion_files.get(row.lesion_key, []), config, "mask")
        if row.image_key not in full or mask is None:
            report.row(row, "full mammogram" if row.image_key not in full else "ROI mask")
            continue
        if last[0] != row.image_key:
            last = (row.image_key, _decode(full[row.image_key], config))
        (pixels, depth), box = last[1], mask_box(mask[1], last[1][0].shape)
        if box is None:
            report.row(row, "non-empty ROI mask")
            continue
        patch = window(pixels, box, config.roi_margin, config.roi_patch_size)
        out.append(_item(resample(patch, config.image_size), depth, label,
                         f"{full[row.image_key].path}#{row.abnormality}", row, row.lesion_key))
    return out


def _whole_images(labelled, full, lesion_files, config: DataConfig, report: MissingReport) -> list:
    best: dict[str, tuple[int, CaseRow]] = {}
    for row, label in labelled:  # a mammogram takes its highest-labelled abnormality
        if row.image_key not in best or label > best[row.image_key][0]:
            best[row.image_key] = (label, row)
    out = []
    for key, (label, row) in sorted(best.items()):
        if key not in full:
            report.row(row, "full mammogram")
            continue
        pixels, depth = _decode(full[key], config, tuple(config.image_size))
        out.append(_item(pixels, depth, label, full[key].path, row, key))
    return out


def _item(pixels, depth, label, path, row: CaseRow, roi: str) -> tuple:
    return (pixels, depth, label, str(path), row.patient, roi,
            "test" if row.partition == "Test" else "train")


def mask_box(mask: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Returns the mask's bounding box (top, left, bottom, right) in an image of `shape`
    (the mask rescaled if its size differs); None for an empty mask."""
    rows, cols = np.nonzero(mask > mask.min())
    if rows.size == 0:
        return None
    fy, fx = shape[0] / mask.shape[0], shape[1] / mask.shape[1]
    return (int(rows.min() * fy), int(cols.min() * fx), int((rows.max() + 1) * fy),
            int((cols.max() + 1) * fx))


def window(pixels: np.ndarray, box: tuple[int, int, int, int], margin: float,
           least: int) -> np.ndarray:
    """Returns the square around `box` grown by `margin` of its side on each side, at least
    `least` pixels, shifted to lie inside the image."""
    top, left, bottom, right = box
    side = int(max(bottom - top, right - left) * (1 + 2 * margin))
    side = min(max(side, least), *pixels.shape)
    row = int(np.clip((top + bottom) // 2 - side // 2, 0, pixels.shape[0] - side))
    col = int(np.clip((left + right) // 2 - side // 2, 0, pixels.shape[1] - side))
    return pixels[row:row + side, col:col + side]


def _overview(labelled, full, lesion_files) -> np.ndarray | None:
    """Returns one full mammogram and its ROI mask at display size, (2, H, W), for the data
    figures; None when no row has both files."""
    for row, _ in labelled:
        masks = [f for f in lesion_files.get(row.lesion_key, []) if row.image_key in full]
        for f in sorted(masks, key=lambda f: -f.header.pixels):
            try:
                mask = dicom.decode_dicom(f.path, str(f.path), max_pixels=MAX_PIXELS)[0]
                if not is_mask(mask):
                    continue
                image = dicom.decode_dicom(full[row.image_key].path, "", max_pixels=MAX_PIXELS)[0]
            except ImageError:
                return None
            scale = _OVERVIEW_SIDE / max(image.shape)
            size = (max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale)))
            return np.stack([resample(image, size), resample(mask, size)])
    return None
