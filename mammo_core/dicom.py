"""DICOM images: headers read without pixels, pixels decoded bounded and by their own depth.

A mammography archive stores 16-bit containers holding 12- to 16-bit values, sometimes
inverted (MONOCHROME1), sometimes with a rescale and a display window; full-field images
are several thousand pixels a side. `decode_dicom` honours `BitsStored` (12-bit data in a
16-bit container reads at full scale, as a 12-bit PGM would), inverts MONOCHROME1,
applies the rescale and the VOI LUT or window only when asked (`voi`), checks the header's
size against a bound before any pixel is decoded, and downscales right after decoding so
only the small image outlives the call.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mammo_core.errors import ImageError
from mammo_core.resampling import resample

PREAMBLE, MAGIC = 128, b"DICM"
# the tags the readers and the data fingerprint's notes rely on
TAGS_USED = ("PatientID", "SeriesDescription", "Laterality", "ImageLaterality", "ViewPosition",
             "Rows", "Columns", "BitsStored", "PhotometricInterpretation", "PixelSpacing",
             "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth")


@dataclass(frozen=True)
class DicomHeader:
    """What a DICOM file says about itself, read without its pixel data."""

    patient_id: str
    series: str
    laterality: str
    view: str
    rows: int
    columns: int
    frames: int
    samples: int
    bits_stored: int
    photometric: str
    pixel_spacing: tuple[float, float] | None
    transfer_syntax: str

    @property
    def pixels(self) -> int:
        return self.rows * self.columns * self.frames * self.samples


def is_dicom(data: bytes) -> bool:
    """Returns whether bytes are a DICOM Part 10 file (the magic after the preamble)."""
    return data[PREAMBLE:PREAMBLE + 4] == MAGIC


def _pydicom():
    import pydicom  # imported on first use: most studies never read DICOM

    return pydicom


def _open(source: bytes | Path | str, name: str, stop_before_pixels: bool):
    pydicom = _pydicom()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's notes on non-conformant values
            handle = io.BytesIO(source) if isinstance(source, bytes) else source
            return pydicom.dcmread(handle, stop_before_pixels=stop_before_pixels)
    except Exception as err:  # noqa: BLE001 — any parser failure on untrusted bytes
        raise ImageError(f"cannot read DICOM {name}: {type(err).__name__}: {err}") from err


def header_of(dataset, name: str) -> DicomHeader:
    """Returns the header of a parsed pydicom dataset; raises ImageError naming `name`
    when it holds no image (no Rows/Columns)."""
    if "Rows" not in dataset or "Columns" not in dataset:
        raise ImageError(f"DICOM {name} holds no image (no Rows/Columns)")
    spacing = dataset.get("PixelSpacing") or dataset.get("ImagerPixelSpacing")
    meta = getattr(dataset, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    return DicomHeader(
        patient_id=str(dataset.get("PatientID", "")).strip(),
        series=str(dataset.get("SeriesDescription", "")).strip(),
        laterality=str(dataset.get("ImageLaterality") or dataset.get("Laterality") or "").strip(),
        view=str(dataset.get("ViewPosition", "")).strip(),
        rows=int(dataset.Rows), columns=int(dataset.Columns),
        frames=int(dataset.get("NumberOfFrames") or 1),
        samples=int(dataset.get("SamplesPerPixel") or 1),
        bits_stored=int(dataset.get("BitsStored") or dataset.get("BitsAllocated") or 16),
        photometric=str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip(),
        pixel_spacing=tuple(float(v) for v in spacing) if spacing else None,
        transfer_syntax=syntax.name if syntax is not None else "unknown")


def read_header(source: bytes | Path | str, name: str = "") -> DicomHeader:
    """Returns a DICOM file's (or bytes') header without decoding its pixels; raises
    ImageError naming `name` (default: the path)."""
    name = name or str(source if not isinstance(source, bytes) else "DICOM bytes")
    return header_of(_open(source, name, stop_before_pixels=True), name)


def header_pixels(data: bytes) -> int:
    """Returns how many pixels DICOM bytes declare (0 if they are not a DICOM image)."""
    try:
        return read_header(data, "request").pixels
    except ImageError:
        return 0


def decode_dicom(source: bytes | Path | str, name: str, *, max_pixels: int,
                 voi: bool = False, downscale_to: tuple[int, int] | None = None
                 ) -> tuple[np.ndarray, int, DicomHeader]:
    """Returns (float32 [0, 1] pixels, the bit depth they were scaled by, the header).

    With `voi`, the rescale slope/intercept and then the VOI LUT or window are applied
    when the file has them (the window's output is the scale). `downscale_to` (rows,
    columns) resamples right after decoding. Raises ImageError naming `name` for bytes
    that are not DICOM, several frames or colour samples, a size over `max_pixels`
    (checked on the header, before decoding) or pixel data that cannot be decoded
    (an unsupported transfer syntax names the syntax).
    """
    dataset = _open(source, name, stop_before_pixels=False)
    header = header_of(dataset, name)
    if header.frames != 1 or header.samples != 1:
        raise ImageError(f"DICOM {name} has {header.frames} frame(s) of {header.samples} "
                         "sample(s); expected one grayscale image")
    if header.pixels > max_pixels:
        raise ImageError(f"DICOM {name} is {header.rows}x{header.columns} = {header.pixels} "
                         f"pixels; at most {max_pixels} are decoded per image", wrong_size=True)
    if header.photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageError(f"DICOM {name} is {header.photometric}; expected MONOCHROME1/2 grayscale")
    try:
        stored = dataset.pixel_array
    except Exception as err:  # noqa: BLE001 — missing handler, truncated or corrupt data
        raise ImageError(f"cannot decode the pixels of DICOM {name} ({header.transfer_syntax}): "
                         f"{type(err).__name__}: {err}") from err
    units, depth = _to_unit(stored, dataset, header, voi)
    del stored
    if header.photometric == "MONOCHROME1":  # 0 is white: invert so bright means dense
        units = 1.0 - units
    if downscale_to is not None and units.shape != tuple(downscale_to):
        units = resample(units, downscale_to)
    return units.astype(np.float32, copy=False), depth, header


def _to_unit(stored: np.ndarray, dataset, header: DicomHeader, voi: bool
             ) -> tuple[np.ndarray, int]:
    """Returns the stored values as [0, 1] float32 and the depth they were scaled by."""
    bits = header.bits_stored
    top = 2 ** bits - 1
    if int(dataset.get("PixelRepresentation", 0)) == 1:  # signed: shift to 0 .. 2^bits - 1
        values = np.clip(stored.astype(np.int64) + 2 ** (bits - 1), 0, top)
    elif stored.size and int(stored.max()) > top:  # bits above BitsStored carry nothing
        values = stored & np.array(top, dtype=stored.dtype)
    else:  # the common case: no copy before the float conversion (memory of full fields)
        values = stored
    if voi and _has_voi(dataset):
        return _windowed(values, dataset, bits), bits
    if voi and ("RescaleSlope" in dataset or "RescaleIntercept" in dataset):
        slope = float(dataset.get("RescaleSlope", 1) or 1)
        intercept = float(dataset.get("RescaleIntercept", 0) or 0)
        ends = np.array([0, top]) * slope + intercept
        low, high = ends.min(), ends.max()
        return ((values * slope + intercept - low) / (high - low)).astype(np.float32), bits
    units = values.astype(np.float32)
    units *= np.float32(1.0 / top)
    return units, bits


def _has_voi(dataset) -> bool:
    return "VOILUTSequence" in dataset or ("WindowCenter" in dataset and "WindowWidth" in dataset)


def _windowed(values: np.ndarray, dataset, bits: int) -> np.ndarray:
    """Returns the rescaled values through the first VOI LUT or window, scaled to [0, 1]."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    rescaled = apply_modality_lut(values.astype(np.float64), dataset)
    if "VOILUTSequence" in dataset:
        out = apply_voi_lut(rescaled, dataset, prefer_lut=True)
        lut_bits = int(dataset.VOILUTSequence[0].LUTDescriptor[2])
        return np.clip(out / (2 ** lut_bits - 1), 0, 1).astype(np.float32)
    centre, width = (_first(dataset.WindowCenter), max(_first(dataset.WindowWidth), 1.0))
    # DICOM PS3.3 C.11.2.1.2's linear window, onto [0, 1]
    return np.clip((rescaled - (centre - 0.5)) / (width - 1) + 0.5, 0, 1).astype(np.float32)


def _first(value) -> float:
    """Returns a window value's first entry (the tag may hold several)."""
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def tags_note(headers: list[DicomHeader]) -> dict[str, str]:
    """Returns what a study's DICOM files were read with: pixel spacing(s), transfer
    syntaxes and the tags used, as strings to log beside the data fingerprint."""
    spacings = sorted({h.pixel_spacing for h in headers if h.pixel_spacing})
    return {"dicom_pixel_spacing_mm": ", ".join(f"{r:g}x{c:g}" for r, c in spacings[:5])
            + (f" (+{len(spacings) - 5} more)" if len(spacings) > 5 else "") or "not given",
            "dicom_transfer_syntaxes": ", ".join(sorted({h.transfer_syntax for h in headers})),
            "dicom_tags_used": ", ".join(TAGS_USED)}
