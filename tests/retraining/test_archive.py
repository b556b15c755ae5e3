import io
import stat
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES, labelled_zip, png_bytes

from prediction_service.core.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from prediction_service.models.mnist.images import ImageLimits, normalize_digits
from prediction_service.retraining.archive import ArchiveLimits, read_labelled_zip
from prediction_service.serving.decode_pool import DecodePool

LIMITS = ArchiveLimits(
    max_entries=100,
    max_uncompressed_bytes=2_000_000,
    max_compression_ratio=100,
    image=ImageLimits(max_bytes=1_000_000, max_pixels=1_000_000),
)


@pytest.fixture(scope="module")
def digits(mnist_arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return mnist_arrays["x_train"][:5], mnist_arrays["y_train"][:5]


def read(data: bytes, limits: ArchiveLimits = LIMITS):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "upload.zip"
        path.write_bytes(data)
        return read_labelled_zip(path, limits)


def zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_the_tutorial_layout(digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    result = read(labelled_zip(images, labels))
    assert result.layout == "labels file"
    assert result.images.shape == (5, 28, 28)
    assert (result.labels == labels).all()
    assert (result.images == normalize_digits(list(images))).all()  # the same preprocessing as predictions


def test_labels_follow_the_sorted_image_names(digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = digits
    entries = {f"{name}.png": png_bytes(image) for name, image in zip(["b", "a", "c"], images[:3], strict=True)}
    entries["labels.txt"] = b"1 2\n3"  # a.png -> 1, b.png -> 2, c.png -> 3
    result = read(zip_of(entries))
    assert list(result.labels) == [1, 2, 3]
    assert (result.images == normalize_digits([images[1], images[0], images[2]])).all()


def test_the_keras_folder_per_class_layout(digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    entries = {
        f"digits/{label}/img{index}.png": png_bytes(image)
        for index, (image, label) in enumerate(zip(images, labels, strict=True))
    }
    entries["digits/README.txt"] = b"not labels"
    result = read(zip_of(entries))
    assert result.layout == "folder per class"
    assert len(result.labels) == len(labels)
    # Which image got which label: each decoded image is matched to its source by its pixels.
    expected = normalize_digits(list(images))
    for image, label in zip(result.images, result.labels, strict=True):
        [source] = [index for index in range(len(images)) if (expected[index] == image).all()]
        assert label == labels[source], source


def test_mac_and_windows_junk_is_ignored(digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    entries = {f"{index}.png": png_bytes(image) for index, image in enumerate(images)}
    entries["labels.txt"] = " ".join(map(str, labels)).encode()
    entries["__MACOSX/._0.png"] = b"\x00\x05\x16\x07 resource fork"
    entries["__MACOSX/._labels.txt"] = b"junk"
    entries[".DS_Store"] = b"junk"
    entries["Thumbs.db"] = b"junk"
    result = read(zip_of(entries))
    assert (result.labels == labels).all()
    assert (result.images == normalize_digits(list(images))).all()


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", InvalidInput, "empty"),
        (b"just some text", UnsupportedMediaType, "not a zip"),
        (zip_of({"labels.txt": b"1 2"}), InvalidInput, "no images"),
        (zip_of({"notes.md": b"hi"}), InvalidInput, "no images"),
    ],
)
def test_unusable_uploads(data: bytes, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        read(data)


def test_a_truncated_zip_is_corrupt(digits: tuple[np.ndarray, np.ndarray]) -> None:
    data = labelled_zip(*digits)
    with pytest.raises(UnsupportedMediaType, match="not a zip archive"):  # its directory is cut off
        read(data[: len(data) - 30])


def test_label_problems_are_listed_with_line_numbers(digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = digits
    entries = {f"{index}.png": png_bytes(image) for index, image in enumerate(images)}
    with pytest.raises(InvalidInput, match="no labels"):
        read(zip_of(entries))
    entries["labels.txt"] = b"1 2\nseven 3\n12"
    with pytest.raises(InvalidInput) as raised:
        read(zip_of(entries))
    assert "line 2: 'seven' is not an integer" in raised.value.detail
    assert "line 3: 12 is outside 0-9" in raised.value.detail
    entries["labels.txt"] = b"1 2 3"
    with pytest.raises(InvalidInput, match="has 3 labels but the archive has 5 images"):
        read(zip_of(entries))
    entries["labels.txt"] = b"1 2 3 4 5"
    entries["more-labels.txt"] = b"1 2 3 4 5"
    with pytest.raises(InvalidInput, match=r"found 2 \.txt files"):
        read(zip_of(entries))


def test_a_labels_file_far_bigger_than_its_labels_is_413(digits: tuple[np.ndarray, np.ndarray]) -> None:
    # It is read whole and split: its size must stay near what the labels need, not the archive limits.
    images, _ = digits
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # stored: no compression ratio to catch
        for index, image in enumerate(images):
            archive.writestr(f"{index}.png", png_bytes(image))
        archive.writestr("labels.txt", b"1 2 3 4 5" + b" " * 100_000)
    with pytest.raises(PayloadTooLarge, match=r"labels.txt is 100009 bytes; 5 labels fit in far less"):
        read(buffer.getvalue())


def test_entries_that_are_not_images_are_named(digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = digits
    entries = {"0.png": png_bytes(images[0]), "1.png": b"I am text", "2.png": b"\x89PNG\r\n\x1a\ngarbage"}
    entries["labels.txt"] = b"1 2 3"
    with pytest.raises(InvalidInput) as raised:
        read(zip_of(entries))
    assert "2 of 3 images cannot be used" in raised.value.detail
    assert "'1.png'" in raised.value.detail
    assert "'2.png'" in raised.value.detail


def test_an_image_over_the_pixel_limit_is_413() -> None:
    big = io.BytesIO()
    from PIL import Image

    Image.new("L", (1100, 1000)).save(big, format="PNG")
    with pytest.raises(PayloadTooLarge, match="pixels"):
        read(zip_of({"0.png": big.getvalue(), "labels.txt": b"1"}))


def test_too_many_entries_is_413(digits: tuple[np.ndarray, np.ndarray]) -> None:
    entries = {f"{index}.png": png_bytes(digits[0][0]) for index in range(101)}
    with pytest.raises(PayloadTooLarge, match="101 entries"):
        read(zip_of(entries))


def test_a_directory_of_countless_entries_is_refused_before_it_is_parsed() -> None:
    # 46-byte central directory records and an end record claiming few: zipfile would build a ZipInfo
    # per record (2 million from 90 MB) before any limit could look at them.
    record = struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0)
    directory = (record + b"a") * 5000
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(directory), 0, 0)
    with pytest.raises(PayloadTooLarge, match=r"up to 5000 entries, over the limit of 100"):
        read(directory + end)


def test_a_zip_bomb_is_refused_without_inflating_it() -> None:
    bomb = zip_of({"0.png": b"\x00" * 50_000_000, "labels.txt": b"1"})
    assert len(bomb) < 100_000
    # Refused on what the directory declares (size, ratio), not after inflating: no wall-clock limit needed.
    with pytest.raises(PayloadTooLarge, match=r"inflates to|compressed more than"):
        read(bomb)
    with pytest.raises(PayloadTooLarge, match="compressed more than 100:1"):
        read(zip_of({"0.png": b"\x00" * 1_000_000, "labels.txt": b"1"}))


def test_overlapping_entries_are_refused(digits: tuple[np.ndarray, np.ndarray]) -> None:
    data = bytearray(zip_of({"a.png": png_bytes(digits[0][0]), "b.png": png_bytes(digits[0][1]), "l.txt": b"1 2"}))
    record = data.find(b"PK\x01\x02", data.find(b"PK\x01\x02") + 4)  # b.png's central directory record
    struct.pack_into("<I", data, record + 42, 0)  # now points at a.png's bytes
    with pytest.raises(InvalidInput, match="overlap"):
        read(bytes(data))


@pytest.mark.parametrize("name", ["/etc/passwd.png", "../../outside.png", "a/../../b.png", "C:\\\\evil.png"])
def test_unsafe_names_are_refused(digits: tuple[np.ndarray, np.ndarray], name: str) -> None:
    with pytest.raises(InvalidInput, match="unsafe entry names"):
        read(zip_of({name: png_bytes(digits[0][0]), "labels.txt": b"1"}))


def test_links_are_refused(digits: tuple[np.ndarray, np.ndarray]) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("0.png", png_bytes(digits[0][0]))
        link = zipfile.ZipInfo("1.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
        archive.writestr("labels.txt", "1 2")
    with pytest.raises(InvalidInput, match="links"):
        read(buffer.getvalue())


def test_nested_archives_are_refused(digits: tuple[np.ndarray, np.ndarray]) -> None:
    inner = labelled_zip(*digits)
    with pytest.raises(InvalidInput, match="nested archives"):
        read(zip_of({"inner.zip": inner}))


def test_mixed_layouts_are_refused(digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = digits
    with pytest.raises(InvalidInput, match="mixed layouts"):
        read(zip_of({"3/a.png": png_bytes(images[0]), "b.png": png_bytes(images[1]), "labels.txt": b"1"}))


def test_the_process_pool_decodes_like_this_process() -> None:
    path = SAMPLES / "retrain_img.zip"
    limits = ArchiveLimits(100_000, 2**30, 100, ImageLimits(1_000_000, 1_000_000))
    pool = DecodePool(2, limits.image)
    pool.start()
    try:
        parallel = read_labelled_zip(path, limits, pool.decode_chunks)
    finally:
        pool.stop()
    serial = read_labelled_zip(path, limits)
    assert len(serial.labels) == 1000
    assert (parallel.images == serial.images).all()
    assert (parallel.labels == serial.labels).all()
