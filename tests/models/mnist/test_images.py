import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from prediction_service.core.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from prediction_service.models.mnist import images
from prediction_service.models.mnist.images import ImageLimits, decode_digit, decode_digits, normalize_digit, read_grey

LIMITS = ImageLimits(max_bytes=5_000_000, max_pixels=4_000_000)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def digit(mnist_arrays: dict[str, np.ndarray]) -> np.ndarray:
    return mnist_arrays["x_test"][0]


@pytest.fixture(scope="module")
def reference(digit: np.ndarray) -> np.ndarray:
    return normalize_digit(digit)


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


def test_an_mnist_digit_is_left_almost_as_it_is(digit: np.ndarray, reference: np.ndarray) -> None:
    assert reference.shape == (28, 28)
    assert reference.dtype == np.uint8
    assert mean_difference(digit, reference) < 3  # MNIST is already centred and scaled this way


def same_digit_forms(digit: np.ndarray) -> dict[str, bytes]:
    grey = Image.fromarray(digit)
    dark_on_light = Image.fromarray(255 - digit)
    transparent = Image.merge("RGBA", [Image.new("L", grey.size, 0)] * 3 + [grey])
    white_ink = Image.merge("RGBA", [Image.new("L", grey.size, 255)] * 3 + [grey])
    return {
        "png grey": encode(grey, "PNG"),
        "gif palette": encode(dark_on_light.convert("P"), "GIF"),
        "bmp rgb": encode(grey.convert("RGB"), "BMP"),
        "png 16-bit": encode(Image.fromarray(digit.astype(np.uint16) * 257), "PNG"),
        "jpeg big dark-on-light": encode(
            dark_on_light.resize((280, 280), Image.Resampling.BICUBIC).convert("RGB"), "JPEG", quality=90
        ),
        "webp": encode(dark_on_light.resize((112, 112)).convert("RGB"), "WEBP", quality=95),
        "png rgba black ink on transparent": encode(transparent.resize((140, 140)), "PNG"),
        "png rgba white ink on transparent": encode(white_ink.resize((140, 140)), "PNG"),
        "png off-centre on a big page": encode(
            Image.fromarray(np.pad(255 - digit, ((10, 90), (120, 20)), constant_values=255)).resize((300, 256)),
            "PNG",
        ),
    }


def test_every_accepted_format_and_mode_becomes_the_same_digit(digit: np.ndarray, reference: np.ndarray) -> None:
    for form, data in same_digit_forms(digit).items():
        normalized = decode_digit(data, LIMITS)
        assert normalized.shape == (28, 28), form
        assert mean_difference(normalized, reference) < 12, form  # resampling blurs a little; not a shift


def test_lossless_forms_are_identical_to_the_reference(digit: np.ndarray, reference: np.ndarray) -> None:
    forms = same_digit_forms(digit)
    for form in ("png grey", "gif palette", "bmp rgb", "png 16-bit"):
        assert (decode_digit(forms[form], LIMITS) == reference).all(), form


def test_thin_pen_strokes_on_a_big_canvas_stay_visible() -> None:
    canvas = Image.new("L", (400, 400), 255)
    from PIL import ImageDraw

    ImageDraw.Draw(canvas).line([(200, 60), (200, 340)], fill=0, width=2)  # a "1" drawn with a 2 px pen
    normalized = decode_digit(encode(canvas, "PNG"), LIMITS)
    assert normalized.max() == 255
    assert (normalized > 128).sum(axis=1).max() >= 2  # at least 2 px wide, like MNIST strokes


def test_a_blank_image_is_all_black() -> None:
    assert decode_digit(encode(Image.new("L", (50, 50), 255), "PNG"), LIMITS).max() == 0


def test_batch_and_single_decoding_agree(digit: np.ndarray) -> None:
    forms = [*list(same_digit_forms(digit).items()), ("not an image", b"hello")]
    batch = decode_digits(forms, LIMITS)
    for (name, data), outcome in zip(forms, batch, strict=True):
        if name == "not an image":
            assert isinstance(outcome, UnsupportedMediaType)
        else:
            assert (outcome == decode_digit(data, LIMITS)).all(), name


def test_grey_pngs_decode_to_their_exact_pixels_through_the_fast_path(mnist_arrays: dict[str, np.ndarray]) -> None:
    # 8-bit grey PNGs (how MNIST digits travel) skip Pillow, which costs 4x more per small image.
    for image in mnist_arrays["x_test"][:300]:
        data = encode(Image.fromarray(image), "PNG")
        assert images._decode_plain_grey_png(data) is not None
        assert (read_grey(data, LIMITS) == image).all()
    transparent_grey = encode(Image.fromarray(mnist_arrays["x_test"][0]), "PNG", transparency=0)
    assert (read_grey(transparent_grey, LIMITS) == mnist_arrays["x_test"][0]).all()  # through Pillow


def test_a_corrupt_grey_png_is_422(digit: np.ndarray) -> None:
    data = bytearray(encode(Image.fromarray(digit), "PNG"))
    data[data.index(b"IDAT") + 12] ^= 0xFF  # inside the compressed pixels
    with pytest.raises(InvalidInput, match="truncated or corrupt"):
        decode_digit(bytes(data), LIMITS)


def test_empty_file_is_422() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        decode_digit(b"", LIMITS)


def test_text_is_415() -> None:
    with pytest.raises(UnsupportedMediaType, match="not a PNG, JPEG, GIF, BMP or WebP"):
        decode_digit(b"hello, I am not a picture", LIMITS)


def test_other_image_formats_are_415_naming_the_format(digit: np.ndarray) -> None:
    with pytest.raises(UnsupportedMediaType, match="TIFF"):
        decode_digit(encode(Image.fromarray(digit), "TIFF"), LIMITS)


def test_truncated_image_is_422(digit: np.ndarray) -> None:
    data = encode(Image.fromarray(digit).resize((200, 200)), "PNG")
    with pytest.raises(InvalidInput, match="truncated or corrupt"):
        decode_digit(data[: len(data) // 2], LIMITS)


def test_png_header_on_garbage_is_a_4xx() -> None:
    with pytest.raises((InvalidInput, UnsupportedMediaType)):
        decode_digit(b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, LIMITS)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size; its pixel data would inflate to gigabytes."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * 1024 * 1024, 9)  # a little of the pixel data
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def test_decompression_bombs_are_413_before_decoding() -> None:
    bomb = png_header_only(50_000, 50_000)
    assert len(bomb) < 10_000
    with pytest.raises(PayloadTooLarge, match="pixels"):
        decode_digit(bomb, LIMITS)


def test_too_many_pixels_is_413_with_the_limit() -> None:
    with pytest.raises(PayloadTooLarge, match="over the limit of 4000000 pixels"):
        decode_digit(encode(Image.new("L", (2100, 2000), 255), "PNG"), LIMITS)


def test_too_many_bytes_is_413() -> None:
    with pytest.raises(PayloadTooLarge, match="bytes"):
        decode_digit(b"x" * 100, ImageLimits(max_bytes=10, max_pixels=100))
