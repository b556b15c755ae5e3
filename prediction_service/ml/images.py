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
import warnings
from dataclasses import dataclass
from io import BytesIO

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from prediction_service.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

SIDE = 28
BOX = 20
ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
ACCEPTED_TEXT = "PNG, JPEG, GIF, BMP or WebP"
# MNIST strokes are about 2-3 px wide inside the 20 px box; thinner strokes get thickened.
MIN_STROKE_PX = 1.6
TARGET_STROKE_PX = 2.2
INK_THRESHOLD = 0.3  # share of the strongest ink that counts as ink for the bounding box
NOISE_FLOOR = 0.12  # share of the strongest ink below which a pixel is background


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int


def decode_digit(data: bytes, limits: ImageLimits, name: str = "the file") -> np.ndarray:
    """Read an uploaded image and return it MNIST-style (28x28 uint8)."""
    return normalize_digit(read_grey(data, limits, name))


def read_grey(data: bytes, limits: ImageLimits, name: str = "the file") -> np.ndarray:
    """Decode an image to a float32 grey array (0-255), checking size limits before decoding."""
    if not data:
        raise InvalidInput(f"{name} is empty: send a {ACCEPTED_TEXT} image of one digit")
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(f"{name} is {len(data)} bytes, over the limit of {limits.max_bytes} bytes")
    image = _open(data, name)
    width, height = image.size
    if width * height > limits.max_pixels:
        raise PayloadTooLarge(
            f"{name} is {width}x{height} = {width * height} pixels, over the limit of "
            f"{limits.max_pixels} pixels: scale it down"
        )
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        return _to_grey(image)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise InvalidInput(
            f"{name} is a {image.format} image that cannot be decoded ({error}): it is truncated or corrupt"
        ) from error


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
    grey = np.asarray(grey, dtype=np.float32)
    border = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
    background = float(np.median(border))
    ink = grey - background if background < 128 else background - grey  # light ink on dark
    strongest = float(ink.max(initial=0))
    if strongest <= 0:
        return np.zeros((SIDE, SIDE), dtype=np.uint8)
    ink *= 255.0 / strongest
    ink[ink < NOISE_FLOOR * 255] = 0

    rows = np.flatnonzero((ink >= INK_THRESHOLD * 255).any(axis=1))
    cols = np.flatnonzero((ink >= INK_THRESHOLD * 255).any(axis=0))
    ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = ink.shape
    scale = BOX / max(height, width)
    if max(height, width) != BOX:
        ink = _resize(ink, scale)
    digit = _place_by_centre_of_mass(ink)
    return np.clip(digit, 0, 255).astype(np.uint8)


def _resize(ink: np.ndarray, scale: float) -> np.ndarray:
    height, width = ink.shape
    stroke = _stroke_width(ink)
    image = Image.fromarray(ink, mode="F")
    if stroke * scale < MIN_STROKE_PX:
        # Thin pen on a big canvas would vanish when shrunk: thicken it first.
        size = 2 * math.ceil((TARGET_STROKE_PX / scale - stroke) / 2) + 1
        image = image.filter(ImageFilter.MaxFilter(min(size, 31)))
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = np.asarray(image.resize(new_size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR))
    top = resized.max(initial=0)
    return resized * (255.0 / top) if top > 0 else resized


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


def _place_by_centre_of_mass(ink: np.ndarray) -> np.ndarray:
    height, width = ink.shape
    total = float(ink.sum())
    if total <= 0:
        return np.zeros((SIDE, SIDE), dtype=np.float32)
    centre_row = float(np.arange(height) @ ink.sum(axis=1)) / total
    centre_col = float(np.arange(width) @ ink.sum(axis=0)) / total
    top = round(SIDE / 2 - centre_row)
    left = round(SIDE / 2 - centre_col)
    top = min(max(top, 0), SIDE - height)
    left = min(max(left, 0), SIDE - width)
    field = np.zeros((SIDE, SIDE), dtype=np.float32)
    field[top : top + height, left : left + width] = ink
    return field
