"""Decoding image files into [0, 1] intensities: one image at a time, bounded, by its own depth.

Every image is scaled by **its own** bit depth before anything stacks it. A folder or a
request may mix 8-bit and 16-bit files, and NumPy promotes a stack of both to uint16,
which would leave the 8-bit images nearly black if the stack were scaled afterwards.

Decoding trusts nothing: only the formats in `FORMATS` are tried, the header's size is
checked before any pixel is decoded, and every decoder failure becomes an `ImageError`
naming the file, never an arbitrary exception.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mammo_core import dicom
from mammo_core.errors import ImageError
from mammo_core.resampling import resample  # noqa: F401  (re-exported: readers use images.resample)

# Pillow format names, and DICOM (read by mammo_core.dicom). PPM is Pillow's reader for
# PGM; TIFF is how some archives store 16-bit; JPEG is how the CBIS-DDSM mass/calcification
# folders are often shared; DICOM is how the archives distribute them.
FORMATS = ("PNG", "PPM", "TIFF", "JPEG", "DICOM")
# Decoding is refused above this many pixels (a full-field mammogram has ~30 M); it keeps
# a forged header from allocating gigabytes. Callers that know a smaller bound pass it.
MAX_PIXELS = 50_000_000


# The depths a 16-bit container (PNG, TIFF, PGM, DICOM) is read at: the smallest that
# holds its values. 12-bit content (scanned film, DICOM exports) stored in 16 bits would
# otherwise land at <= 1/16 of the scale, while the same pixels in a PGM with maxval 4095
# come out at full scale.
CONTAINER_DEPTHS = (8, 10, 12, 14, 16)


@dataclass(frozen=True)
class DecodedImage:
    """One decoded image: float32 (rows, columns) intensities in [0, 1], the bit depth they
    were scaled by, and the container's depth (8 or 16 bits per sample). `declared`: the
    file states its depth (DICOM's BitsStored), so it is never read at another."""

    pixels: np.ndarray
    bit_depth: int
    container_depth: int = 8
    declared: bool = False

    @property
    def rescalable(self) -> bool:
        """Whether the depth was guessed from a 16-bit container's values (may be deeper)."""
        return self.container_depth == 16 and not self.declared


def depth_of(largest: int) -> int:
    """Returns the smallest of CONTAINER_DEPTHS whose full scale holds `largest`."""
    return next(d for d in CONTAINER_DEPTHS if largest <= full_scale(d))


def at_depth(image: DecodedImage, depth: int) -> DecodedImage:
    """Returns the image rescaled as if read at `depth` (>= its own): the stored integers
    are the same, only the full scale they are divided by changes."""
    scale = np.float32(full_scale(image.bit_depth) / full_scale(depth))
    return DecodedImage(image.pixels * scale, depth, image.container_depth, image.declared)


def common_depth(images: list[DecodedImage]) -> list[DecodedImage]:
    """Returns the images with every 16-bit container read at the deepest of their depths:
    one collection, one scale (a darker patch is not brightened by its own smaller depth);
    8-bit files keep theirs."""
    deepest = max((i.bit_depth for i in images if i.rescalable), default=None)
    return [at_depth(i, deepest) if i.rescalable else i for i in images]


def decode(data: bytes, name: str, size: tuple[int, int] | None, *, resize: bool = False,
           formats: tuple[str, ...] = FORMATS, max_pixels: int = MAX_PIXELS,
           depth: int | None = None) -> DecodedImage:
    """Returns encoded image bytes as [0, 1] intensities of `size` (rows, columns).

    A 16-bit container is scaled by the depth its values need (`depth_of`), or by `depth`
    (the model's training depth) when that is deeper: a dark 12-bit patch then reads as
    the training data did. A DICOM file is scaled by the depth it declares (BitsStored).

    `size` None keeps the stored size (only `max_pixels` bounds it). With `resize`, an
    image of another size is resampled (bilinear) instead of refused.
    Raises ImageError naming `name`: a format outside `formats`, a header whose size is
    wrong (checked before decoding) or over `max_pixels`, truncated or corrupt bytes, or an
    image that is not 8- or 16-bit grayscale. `wrong_size` is set on the size errors.
    """
    if dicom.is_dicom(data):
        image = _decode_dicom(data, name, size, resize, formats, max_pixels)
    else:
        image = _decode_pillow(data, name, size, resize, formats, max_pixels)
    if depth is not None and image.rescalable and depth > image.bit_depth:
        image = at_depth(image, depth)
    if size is not None and image.pixels.shape != tuple(size):
        image = DecodedImage(resample(image.pixels, size), image.bit_depth, image.container_depth,
                             image.declared)
    return image


def _decode_pillow(data: bytes, name: str, size: tuple[int, int] | None, resize: bool,
                   formats: tuple[str, ...], max_pixels: int) -> DecodedImage:
    pillow = tuple(f for f in formats if f != "DICOM")
    try:
        with warnings.catch_warnings():
            # our own pixel bound below is tighter than Pillow's warning threshold
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(pillow)) as img:
                _check_header(img.height, img.width, name, size, resize, max_pixels)
                img.load()  # decodes now, so truncated files fail here
                return _unit_pixels(img, name)
    except ImageError:
        raise
    except Image.UnidentifiedImageError as err:
        raise ImageError(f"cannot read image {name}: not a {_names(formats)} image") from err
    except Image.DecompressionBombError as err:  # Pillow's own bound, checked while opening
        raise ImageError(f"image {name} has too many pixels to decode: {err}",
                         wrong_size=True) from err
    except Exception as err:  # noqa: BLE001 — any decoder failure on untrusted bytes
        raise ImageError(f"cannot read image {name}: {type(err).__name__}: {err}") from err


def _decode_dicom(data: bytes, name: str, size: tuple[int, int] | None, resize: bool,
                  formats: tuple[str, ...], max_pixels: int) -> DecodedImage:
    """Returns a DICOM file's pixels; the size is checked on its header first."""
    if "DICOM" not in formats:
        raise ImageError(f"cannot read image {name}: a DICOM file, expected {_names(formats)}")
    header = dicom.read_header(data, name)
    _check_header(header.rows, header.columns, name, size, resize, max_pixels)
    pixels, bits, _ = dicom.decode_dicom(data, name, max_pixels=max_pixels,
                                         downscale_to=tuple(size) if size else None)
    return DecodedImage(pixels, bits, 16 if bits > 8 else 8, declared=True)


def decode_image(data: bytes, size: tuple[int, int], name: str, resize: bool = False,
                 **limits) -> np.ndarray:
    """Returns `decode(...)`'s [0, 1] float32 pixels (rows, columns)."""
    return decode(data, name, size, resize=resize, **limits).pixels


EXTENSION_FORMATS = {".png": "PNG", ".pgm": "PPM", ".ppm": "PPM", ".tif": "TIFF",
                     ".tiff": "TIFF", ".jpg": "JPEG", ".jpeg": "JPEG", ".dcm": "DICOM"}


def formats_of(extensions) -> tuple[str, ...]:
    """Returns the Pillow formats of file extensions (".jpg" -> "JPEG"), in order."""
    formats = [EXTENSION_FORMATS.get(e.lower()) for e in extensions]
    return tuple(dict.fromkeys(f for f in formats if f))


def header_pixels(data: bytes, formats: tuple[str, ...] = FORMATS) -> int:
    """Returns how many pixels encoded image bytes declare in their header, without
    decoding them; 0 for bytes that are not an image of `formats` (decoding says why)."""
    if dicom.is_dicom(data):
        return dicom.header_pixels(data) if "DICOM" in formats else 0
    try:
        with Image.open(io.BytesIO(data), formats=list(formats)) as img:
            return img.width * img.height
    except Exception:  # noqa: BLE001 — any failure: not an image, reported by `decode`
        return 0


def read(path: Path | str, size: tuple[int, int] | None, **options) -> DecodedImage:
    """Returns the decoded image file; raises ImageError naming it (also when unreadable)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ImageError(f"cannot read image {path}: {err}") from err
    return decode(data, str(path), size, **options)


def read_image(path: Path | str, size: tuple[int, int], **options) -> np.ndarray:
    """Returns one image file as float32 [0, 1] intensities shaped `size`."""
    return read(path, size, **options).pixels


def full_scale(bit_depth: int) -> int:
    """Returns the largest integer of `bit_depth` bits (255 for 8, 4095 for 12, 65535 for 16)."""
    return 2 ** bit_depth - 1


def to_unit(array: np.ndarray, bit_depth: int) -> np.ndarray:
    """Returns integer pixels of `bit_depth` as float32 in [0, 1], divided by its full scale.

    The one place where stored integers become intensities; raises ImageError for values
    that do not fit the depth.
    """
    top = full_scale(bit_depth)
    if array.size and (array.min() < 0 or array.max() > top):
        raise ImageError(f"integer pixels must lie in [0, {top}] ({bit_depth}-bit), got "
                         f"[{array.min()}, {array.max()}]")
    return array.astype(np.float32) / np.float32(top)


def as_unit(array: np.ndarray, bit_depth: int | None = None) -> np.ndarray:
    """Returns an array of pixels from a caller as float32 intensities in [0, 1].

    uint8 is scaled by 255; uint16, a 16-bit container, by the depth its values need or
    `bit_depth` (the model's training depth) if deeper, as `decode` reads a 16-bit file;
    other integers (JSON gives int64) hold raw intensities of `bit_depth` (None:
    refused); floats must be finite and in [0, 1]. Raises ImageError naming the problem.
    """
    if array.dtype == np.uint8:
        return to_unit(array, 8)
    if array.dtype == np.uint16:
        own = depth_of(int(array.max())) if array.size else 8
        return to_unit(array, max(own, bit_depth or 8))
    if np.issubdtype(array.dtype, np.integer):
        if bit_depth is None:
            raise ImageError(f"expected 8- or 16-bit unsigned integer pixels, got {array.dtype}")
        return to_unit(array, bit_depth)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ImageError("pixels contain NaN or infinite values")
        if array.size and (array.min() < 0 or array.max() > 1):
            raise ImageError(f"float pixels must be intensities in [0, 1], got "
                             f"[{array.min():.4g}, {array.max():.4g}]; send integers for raw "
                             "pixels")
        return array.astype(np.float32)
    raise ImageError(f"expected uint8, uint16, integer or float pixels, got dtype {array.dtype}")


def quantize(units: np.ndarray, bit_depth: int) -> np.ndarray:
    """Returns [0, 1] intensities as the integers of `bit_depth` they were stored as."""
    dtype = np.uint8 if bit_depth <= 8 else np.uint16
    return np.rint(units * np.float32(full_scale(bit_depth))).astype(dtype)


def _check_header(height: int, width: int, name: str, size: tuple[int, int] | None,
                  resize: bool, max_pixels: int) -> None:
    if size is not None and (height, width) == tuple(size):
        return
    if size is not None and not resize:
        raise ImageError(f"image {name} has size {height}x{width} (rows x columns), the "
                         f"experiment expects {size[0]}x{size[1]}", wrong_size=True)
    if width * height > max_pixels:
        raise ImageError(f"image {name} is {height}x{width} = {width * height} pixels; at most "
                         f"{max_pixels} are decoded per image", wrong_size=True)


def _unit_pixels(img: Image.Image, name: str) -> DecodedImage:
    """Returns the decoded image as [0, 1] pixels, with the depth they were scaled by."""
    if img.mode == "1":  # bilevel: black or white
        img = img.convert("L")
    if img.mode in ("RGB", "RGBA", "LA", "P"):
        img = _gray_from_color(img, name)
    if img.mode == "L":
        return DecodedImage(to_unit(np.asarray(img, dtype=np.uint8), 8), 8, 8)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # Pillow reads a PGM whose maxval is neither 255 nor 65535 rescaled to 65535, and
        # 16-bit PNG/TIFF as stored: the values, not the container, give the depth.
        array = np.asarray(img).astype(np.int64)
        if array.min() < 0 or array.max() > 65535:
            raise ImageError(f"image {name} has values outside the 16-bit range")
        depth = depth_of(int(array.max()) if array.size else 0)
        return DecodedImage(to_unit(array, depth), depth, 16)
    raise ImageError(f"image {name} has mode {img.mode}; expected 8- or 16-bit grayscale")


def _gray_from_color(img: Image.Image, name: str) -> Image.Image:
    """Returns the 8-bit gray image a colour-stored grayscale image holds.

    Mammograms are often saved as RGB (or palette) with three equal channels; those are
    read losslessly. An image whose channels differ is refused, not averaged away.
    """
    rgb = np.asarray(img.convert("RGB"))
    if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
        raise ImageError(f"image {name} is a colour image (mode {img.mode}, channels differ); "
                         "expected grayscale")
    return Image.fromarray(np.ascontiguousarray(rgb[..., 0]))


def _names(formats: tuple[str, ...]) -> str:
    """Returns the formats as people call them: "PNG, PGM or TIFF"."""
    names = ["PGM" if f == "PPM" else f for f in formats]
    if not names:
        return "supported"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
