"""Schemathesis hooks: real images and real labelled zips for the upload fields.

The schema can say that a part is an image (its media type), not what makes
the bytes a decodable image; these strategies make the data that the schema
describes, so that schemathesis's positive tests send what a client would.
Used with SCHEMATHESIS_HOOKS=schemathesis_hooks (see test_schema_fuzzing.py).
"""

import io
import zipfile

import numpy as np
import schemathesis
from hypothesis import strategies as st
from PIL import Image

IMAGE_TYPES = "image/png, image/jpeg, image/gif, image/bmp, image/webp"
FORMATS = ["PNG", "JPEG", "GIF", "BMP", "WEBP"]


def _image(seed: int, size: int, fmt: str) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.zeros((size, size), dtype=np.uint8)
    stroke = rng.integers(size // 8, size // 3)
    start = rng.integers(0, size - stroke)
    pixels[start : start + stroke, size // 4 : 3 * size // 4] = 255  # a bar: some "ink"
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("RGB" if fmt == "JPEG" else "L").save(buffer, format=fmt)
    return buffer.getvalue()


images = st.builds(_image, st.integers(0, 2**32 - 1), st.integers(8, 96), st.sampled_from(FORMATS))


def _labelled_zip(seeds: list[int]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for index, seed in enumerate(seeds):
            archive.writestr(f"img_{index:03d}.png", _image(seed, 28, "PNG"))
        archive.writestr("labels.txt", " ".join(str(seed % 10) for seed in seeds))
    return buffer.getvalue()


labelled_zips = st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=5).map(_labelled_zip)

for media_type in (IMAGE_TYPES, "image/png"):
    schemathesis.openapi.media_type(media_type, images)
schemathesis.openapi.media_type("application/zip", labelled_zips)
