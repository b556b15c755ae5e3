"""Turn any digit picture into what the CNN was trained on: an MNIST-style 28x28 array.

MNIST digits are light on a dark background, size-normalised to fit a 20x20 box
(aspect ratio kept, anti-aliased) and placed in a 28x28 field so that their
centre of mass sits at the centre. `normalize_digit` does the same to a grey
array; `decode_digit` first reads an uploaded file of any common format and
mode into such an array. Training (uploads and the first training set) and
prediction both go through `normalize_digit`, so the model always sees one kind
of input.
"""

import math
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO

import imagecodecs
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from prediction_service.core.errors import InvalidInput, PayloadTooLarge, ServiceError, UnsupportedMediaType

SIDE = 28
BOX = 20
ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
ACCEPTED_TEXT = "PNG, JPEG, GIF, BMP or WebP"
ORIENTED_FORMATS = ("JPEG", "WEBP")
# MNIST strokes are about 2-3 px wide inside the 20 px box; thinner strokes get thickened.
MIN_STROKE_PX = 1.6
TARGET_STROKE_PX = 2.2
MAX_THICKENING = 61  # px; with WORKING_SIDE this covers a 1 px pen on the largest canvas
INK_THRESHOLD = 0.3  # share of the strongest ink that counts as ink for the bounding box
NOISE_FLOOR = 0.12  # share of the strongest ink below which a pixel is background
_POSITIONS = np.arange(SIDE, dtype=np.float32)
GROUP = 256  # images computed together: big enough to share the work, small enough for the CPU cache
# Big pictures are shrunk to this before any arithmetic (the digit ends up 20 px tall anyway).
WORKING_SIDE = 448
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int


def warm_up() -> None:
    """Decode a tiny image of every accepted format once: Pillow loads its format plugins lazily,
    which would otherwise slow down the first request (or the first upload in a new process)."""
    limits = ImageLimits(max_bytes=1 << 20, max_pixels=1 << 20)
    for image_format in ACCEPTED_FORMATS:
        buffer = BytesIO()
        Image.new("RGB" if image_format == "JPEG" else "L", (28, 28), 255).save(buffer, format=image_format)
        decode_digits([("warm-up", buffer.getvalue())], limits)


def decode_digit(data: bytes, limits: ImageLimits, name: str = "the file") -> np.ndarray:
    """Read an uploaded image and return it MNIST-style (28x28 uint8)."""
    return normalize_digit(read_grey(data, limits, name))


def decode_digits(files: Sequence[tuple[str, bytes]], limits: ImageLimits) -> list[np.ndarray | ServiceError]:
    """Many (name, bytes) files at once: an MNIST-style array, or the error, per file."""
    stack, errors = decode_digit_stack(files, limits)
    return [errors.get(index, digit) for index, digit in enumerate(stack)]


def decode_digit_stack(
    files: Sequence[tuple[str, bytes]], limits: ImageLimits
) -> tuple[np.ndarray, dict[int, ServiceError]]:
    """Many files at once, as one (n, 28, 28) array (black where a file failed) and each failure
    by position: cheaper to send between processes than an array per file."""
    greys: list[np.ndarray] = []
    decoded: list[int] = []
    errors: dict[int, ServiceError] = {}
    for index, (name, data) in enumerate(files):
        try:
            greys.append(read_grey(data, limits, name))
            decoded.append(index)
        except ServiceError as error:
            errors[index] = error
    if not errors:
        return normalize_digits(greys), errors
    stack = np.zeros((len(files), SIDE, SIDE), dtype=np.uint8)
    if greys:
        stack[decoded] = normalize_digits(greys)
    return stack, errors


def read_grey(data: bytes, limits: ImageLimits, name: str = "the file") -> np.ndarray:
    """Decode an image to a float32 grey array (0-255), checking size limits before decoding."""
    if not data:
        raise InvalidInput(f"{name} is empty: send a {ACCEPTED_TEXT} image of one digit")
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(f"{name} is {len(data)} bytes, over the limit of {limits.max_bytes} bytes")
    grey_png_size = _plain_grey_png_size(data)
    if grey_png_size is not None:
        _check_pixels(*grey_png_size, limits, name)
        pixels = _decode_plain_grey_png(data)
        if pixels is not None:
            return _shrunk(pixels.astype(np.float32))
    image = _open(data, name)
    width, height = image.size
    _check_pixels(width, height, limits, name)
    try:
        if image.format == "JPEG" and max(width, height) > 2 * WORKING_SIDE:
            image.draft("L", (width * WORKING_SIDE // max(width, height), height * WORKING_SIDE // max(width, height)))
        image.load()
        if image.format in ORIENTED_FORMATS:  # photos: honour the camera's orientation tag
            image = ImageOps.exif_transpose(image)
        return _shrunk(_to_grey(image))
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise InvalidInput(
            f"{name} is a {image.format} image that cannot be decoded ({error}): it is truncated or corrupt"
        ) from error


def _check_pixels(width: int, height: int, limits: ImageLimits, name: str) -> None:
    if width * height > limits.max_pixels:
        raise PayloadTooLarge(
            f"{name} is {width}x{height} = {width * height} pixels, over the limit of "
            f"{limits.max_pixels} pixels: scale it down"
        )


def _plain_grey_png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of an 8-bit greyscale PNG (what MNIST digits are saved as), from its header;
    None for anything else."""
    if len(data) < 33 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, bit_depth, colour_type = struct.unpack_from(">IIBB", data, 16)
    return (width, height) if bit_depth == 8 and colour_type == 0 else None


def _decode_plain_grey_png(data: bytes) -> np.ndarray | None:
    """The pixels of an 8-bit greyscale PNG through libpng (imagecodecs): ~7 us for a 28x28 digit
    against ~25 us through Pillow, which counts in a 60,000-image upload. Lossless, so the pixels
    are Pillow's. None when libpng refuses the file (or adds an alpha channel for a transparent
    grey): Pillow then reads it, or says precisely what is wrong with it."""
    try:
        pixels = imagecodecs.png_decode(data)
    except imagecodecs.PngError:
        return None
    return pixels if pixels.ndim == 2 and pixels.dtype == np.uint8 else None


def _shrunk(grey: np.ndarray) -> np.ndarray:
    factor = max(grey.shape) // WORKING_SIDE
    if factor < 2:
        return grey
    return np.asarray(Image.fromarray(grey, mode="F").reduce(factor))


def _open(data: bytes, name: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(BytesIO(data), formats=ACCEPTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise PayloadTooLarge(f"{name} has too many pixels to decode safely ({error})") from error
    except UnidentifiedImageError:
        pass
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InvalidInput(f"{name} looks like an image but its header is corrupt ({error})") from error
    raise UnsupportedMediaType(f"{name} is not a {ACCEPTED_TEXT} image{_other_format(data)}")


def _other_format(data: bytes) -> str:
    """Name the format of a readable but unaccepted image, for the error message."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(BytesIO(data)) as image:
                return f" (it is {image.format}; convert it)"
    except Exception:  # noqa: BLE001 - any failure just means "not an image"
        return ""


def _to_grey(image: Image.Image) -> np.ndarray:
    """Any mode to a float32 luminance array; transparency is composited away."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float32)
        top = 65535.0 if values.max(initial=0) > 255 or mode.startswith("I;16") else 255.0
        return values * (255.0 / top)
    if mode == "F":
        values = np.asarray(image, dtype=np.float32)
        return values * (255.0 / max(float(values.max(initial=0)), 1.0)) if values.max(initial=0) > 255 else values
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info):
        return _flatten_transparency(image.convert("LA"))
    if mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.float32)


def _flatten_transparency(image: Image.Image) -> np.ndarray:
    """Put a transparent image on a background that contrasts with its opaque part."""
    pixels = np.asarray(image, dtype=np.float32)
    grey, alpha = pixels[..., 0], pixels[..., 1] / 255.0
    opaque = alpha > 0.5
    if opaque.all() or not opaque.any():
        return grey
    background = 0.0 if np.median(grey[opaque]) > 127 else 255.0
    return grey * alpha + background * (1.0 - alpha)


def normalize_digit(grey: np.ndarray) -> np.ndarray:
    """A grey array of any size and polarity to an MNIST-style 28x28 uint8 array."""
    return normalize_digits([grey])[0]


def normalize_digits(greys: Sequence[np.ndarray]) -> np.ndarray:
    """Grey arrays of any size and polarity to an (n, 28, 28) uint8 MNIST-style stack.

    Arrays of one shape go through the arithmetic together; only digits that
    need resizing take a slower per-image path.
    """
    out = np.zeros((len(greys), SIDE, SIDE), dtype=np.uint8)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, grey in enumerate(greys):
        by_shape.setdefault(np.shape(grey), []).append(index)
    groups = [
        indices[start : start + GROUP] for indices in by_shape.values() for start in range(0, len(indices), GROUP)
    ]
    for indices in groups:
        stack = np.stack([greys[index] for index in indices]) if len(indices) > 1 else greys[indices[0]][None]
        ink = _light_ink_on_black(stack.astype(np.float32))
        height, width = ink.shape[1:]
        solid = ink >= INK_THRESHOLD * 255
        rows, cols = np.asarray(solid.any(axis=2)), np.asarray(solid.any(axis=1))
        top, left = rows.argmax(axis=1), cols.argmax(axis=1)
        bottom, right = height - rows[:, ::-1].argmax(axis=1), width - cols[:, ::-1].argmax(axis=1)
        # Faint specks outside the digit's box do not count (the box is what gets placed).
        ink *= _between(height, top, bottom)[:, :, None] & _between(width, left, right)[:, None, :]
        # Where the digit already fits the 20 px box (MNIST-like input), centre it right here.
        row_mass, col_mass = ink.sum(axis=2), ink.sum(axis=1)
        mass = np.maximum(row_mass.sum(axis=1), 1e-6)
        shift_down = np.rint(SIDE / 2 - (row_mass @ np.arange(height, dtype=np.float32)) / mass).astype(int)
        shift_right = np.rint(SIDE / 2 - (col_mass @ np.arange(width, dtype=np.float32)) / mass).astype(int)
        for position, index in enumerate(indices):
            r0, r1, c0, c1 = top[position], bottom[position], left[position], right[position]
            if r1 <= r0:
                continue  # blank: stays black
            digit = ink[position, r0:r1, c0:c1]
            if max(r1 - r0, c1 - c0) == BOX:
                place_row = min(max(r0 + shift_down[position], 0), SIDE - (r1 - r0))
                place_col = min(max(c0 + shift_right[position], 0), SIDE - (c1 - c0))
                out[index, place_row : place_row + r1 - r0, place_col : place_col + c1 - c0] = digit
            else:
                _place_by_centre_of_mass(_fit_box(digit), out[index])
    return out


def _between(size: int, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    positions = np.arange(size)
    return (positions >= start[:, None]) & (positions < stop[:, None])


def _light_ink_on_black(stack: np.ndarray) -> np.ndarray:
    """(k, h, w) float32 grey images, changed in place to light ink on a zero background, strongest at 255."""
    border = np.concatenate((stack[:, 0], stack[:, -1], stack[:, 1:-1, 0], stack[:, 1:-1, -1]), axis=1)
    middle = border.shape[1] // 2
    background = np.partition(border, middle, axis=1)[:, middle, None, None]
    # Background is the frame's median: dark frame, ink is what is lighter; light paper, what is darker.
    ink = np.subtract(stack, background, out=stack)
    light_paper = background[:, 0, 0] >= 128
    if light_paper.any():
        ink[light_paper] *= -1
    strongest = ink.max(axis=(1, 2), keepdims=True)
    ink *= np.divide(255.0, strongest, out=np.zeros_like(strongest), where=strongest > 0)
    np.putmask(ink, ink < NOISE_FLOOR * 255, 0)
    return ink


def _fit_box(ink: np.ndarray) -> np.ndarray:
    """Scale a cropped digit so that its longer side is BOX pixels, keeping its aspect ratio."""
    scale = BOX / max(ink.shape)
    stroke = _stroke_width(ink)
    if stroke * scale < MIN_STROKE_PX:
        # A thin pen on a big canvas would fade away when shrunk: thicken the strokes first.
        size = min(2 * math.ceil((TARGET_STROKE_PX / scale - stroke) / 2) + 1, MAX_THICKENING)
        ink = ndimage.maximum_filter(np.pad(ink, size // 2), size=size)
        scale = BOX / max(ink.shape)
    height, width = ink.shape
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR
    resized = np.array(Image.fromarray(ink, mode="F").resize(new_size, resample))
    top = resized.max(initial=0)
    if top > 0:
        resized *= 255.0 / top
    return np.clip(resized, 0, 255, out=resized)


def _stroke_width(ink: np.ndarray) -> float:
    """Rough stroke width: twice the ink area over the length of its outline."""
    mask = ink >= INK_THRESHOLD * 255
    area = int(mask.sum())
    if area == 0:
        return 1.0
    padded = np.pad(mask, 1)
    interior = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    outline = max(area - int(interior.sum()), 1)
    return 2.0 * area / outline


def _place_by_centre_of_mass(ink: np.ndarray, field: np.ndarray) -> None:
    """Write `ink` into the 28x28 `field` so that its centre of mass is at the centre."""
    height, width = ink.shape
    row_mass = ink.sum(axis=1)
    total = row_mass.sum()
    if total <= 0:
        return
    centre_row = row_mass @ _POSITIONS[:height] / total
    centre_col = ink.sum(axis=0) @ _POSITIONS[:width] / total
    top = min(max(round(SIDE / 2 - centre_row), 0), SIDE - height)
    left = min(max(round(SIDE / 2 - centre_col), 0), SIDE - width)
    field[top : top + height, left : left + width] = ink
