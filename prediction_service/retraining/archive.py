"""Read a zip of labelled digit images, refusing anything unsafe before inflating it.

Two layouts are accepted:

- the tutorial's: image files plus one `.txt` of whitespace-separated labels, in
  the order of the sorted image names;
- Keras's folder per class (`image_dataset_from_directory`): `0/a.png`, `1/b.png`,
  ... optionally under one top folder.

Nothing is extracted to disk and no name from the archive is used as a path;
names only appear in messages. Checks run on the central directory first
(entry count, names, links, declared sizes, compression ratios, overlapping
entries), so a zip bomb is refused without inflating a byte of it.
"""

import itertools
import stat
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prediction_service.core.errors import InvalidInput, PayloadTooLarge, ServiceError, UnsupportedMediaType
from prediction_service.models.mnist.images import ImageLimits, decode_digit_stack
from prediction_service.retraining.zip_entries import LOCAL_HEADER, EntryReader, EntryRecord, directory_records_at_most

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp"}
ARCHIVE_SUFFIXES = {".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar"}
JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}
MAX_LISTED = 10
CHUNK_IMAGES = 512
CHUNK_BYTES = 16 * 1024 * 1024
# A labels file holds a digit and a separator per image; room for CRLFs, padding and a comment-free header.
LABEL_BYTES_PER_IMAGE = 16
LABEL_BYTES_SLACK = 64 * 1024

Chunk = list[EntryRecord]
# (n, 28, 28) images in the chunk's order, black where one failed; the failures by position.
Decoded = tuple[np.ndarray, dict[int, ServiceError]]
# Turns chunks of entry names of the zip at a path into decoded images, in order.
DecodeChunks = Callable[[Path, Iterable[Chunk]], Iterator[Decoded]]


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int
    max_uncompressed_bytes: int
    max_compression_ratio: float
    image: ImageLimits


@dataclass(frozen=True)
class LabelledImages:
    images: np.ndarray  # (n, 28, 28) uint8, MNIST-style
    labels: np.ndarray  # (n,) uint8
    layout: str

    @property
    def inputs(self) -> np.ndarray:
        return self.images

    def label_counts(self) -> dict[str, int]:
        counts = Counter(int(label) for label in self.labels)
        return {str(digit): counts.get(digit, 0) for digit in range(10)}


def decode_entries(path: Path, entries: Chunk, limits: ImageLimits) -> Decoded:
    """Decode some entries of an already checked zip: the work of a decoding process, or of this one."""
    files, unreadable = [], {}
    with EntryReader(path) as reader:
        for index, entry in enumerate(entries):
            try:
                files.append((repr(entry.name), reader.read(entry)))
            except (
                zipfile.BadZipFile,
                OSError,
                ValueError,
                EOFError,
                NotImplementedError,
                KeyError,
                zlib.error,
            ) as error:
                unreadable[index] = InvalidInput(f"{entry.name!r} cannot be read from the archive ({error})")
                files.append((repr(entry.name), b""))
    stack, errors = decode_digit_stack(files, limits)
    return stack, {**errors, **unreadable}


def decode_in_this_process(limits: ImageLimits) -> DecodeChunks:
    """Decode in the calling process, chunk by chunk."""

    def decode(path: Path, chunks: Iterable[Chunk]) -> Iterator[Decoded]:
        for chunk in chunks:
            yield decode_entries(path, chunk, limits)

    return decode


def read_labelled_zip(path: Path, limits: ArchiveLimits, decode_chunks: DecodeChunks | None = None) -> LabelledImages:
    """The images (MNIST-style) and labels in the zip at `path`; every problem is a ServiceError.

    `decode_chunks` decodes the images, chunk by chunk: by default in this
    process, or e.g. with a DecodePool, whose decoding processes read the zip
    themselves.
    """
    decode_chunks = decode_chunks or decode_in_this_process(limits.image)
    archive = _open(path, limits.max_entries)
    with archive:
        entries = _checked_entries(archive, limits)
        images = [entry for entry in entries if _suffix(entry) in IMAGE_SUFFIXES]
        if not images:
            raise InvalidInput(
                "the archive has no images: put PNG files at its top level with a labels .txt, or in folders named 0-9"
            )
        by_folder = {entry.filename: _class_folder(entry.filename) for entry in images}
        in_class_folders = [name for name, digit in by_folder.items() if digit is not None]
        if in_class_folders and len(in_class_folders) < len(images):
            loose = sorted(name for name, digit in by_folder.items() if digit is None)
            raise InvalidInput(
                "mixed layouts: some images are in folders named 0-9 and these are not: "
                f"{_listing(loose)}; use one layout"
            )
        if in_class_folders:
            ordered = sorted(images, key=lambda entry: entry.filename)
            labels = np.array([by_folder[entry.filename] for entry in ordered], dtype=np.uint8)
            layout = "folder per class"
        else:
            ordered = sorted(images, key=lambda entry: entry.filename)
            labels = _labels_from_text(archive, entries, len(ordered))
            layout = "labels file"
    decoded = _decode_all(path, ordered, decode_chunks)
    return LabelledImages(decoded, labels, layout)


def _open(path: Path, max_entries: int) -> zipfile.ZipFile:
    if path.stat().st_size == 0:
        raise InvalidInput("the upload is empty: send a .zip of labelled PNG images")
    if not zipfile.is_zipfile(path):
        raise UnsupportedMediaType("the upload is not a zip archive: send a .zip of labelled PNG images")
    records = directory_records_at_most(path)
    if records > max_entries:
        raise PayloadTooLarge(
            f"the archive has up to {records} entries, over the limit of {max_entries} (MAX_ZIP_ENTRIES)"
        )
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as error:
        raise InvalidInput(f"the zip archive is corrupt ({error}): create it again") from error


def _checked_entries(archive: zipfile.ZipFile, limits: ArchiveLimits) -> list[zipfile.ZipInfo]:
    """The archive's file entries that matter, after every check that needs no inflating."""
    infos = archive.infolist()
    if len(infos) > limits.max_entries:
        raise PayloadTooLarge(
            f"the archive has {len(infos)} entries, over the limit of {limits.max_entries} (MAX_ZIP_ENTRIES)"
        )
    _refuse_overlaps(infos)
    unsafe = [info.filename for info in infos if _unsafe_name(info.filename)]
    if unsafe:
        raise InvalidInput(f"unsafe entry names (absolute paths or '..'): {_listing(unsafe)}; use relative names")
    links = [info.filename for info in infos if stat.S_ISLNK(info.external_attr >> 16)]
    if links:
        raise InvalidInput(f"the archive holds links, which are not accepted: {_listing(links)}")
    encrypted = [info.filename for info in infos if info.flag_bits & 0x1]
    if encrypted:
        raise InvalidInput(f"encrypted entries cannot be read: {_listing(encrypted)}; zip without a password")
    entries = [info for info in infos if not info.is_dir() and not _is_junk(info.filename)]
    nested = [info.filename for info in entries if _suffix(info) in ARCHIVE_SUFFIXES]
    if nested:
        raise InvalidInput(
            f"nested archives are not unpacked: {_listing(nested)}; put their images in this zip directly"
        )
    total = sum(info.file_size for info in entries)
    if total > limits.max_uncompressed_bytes:
        raise PayloadTooLarge(
            f"the archive inflates to {total} bytes, over the limit of {limits.max_uncompressed_bytes} "
            "(MAX_ZIP_UNCOMPRESSED_BYTES)"
        )
    inflating = [
        info.filename
        for info in entries
        if info.file_size > 1024 and info.file_size > limits.max_compression_ratio * max(info.compress_size, 1)
    ]
    if inflating:
        raise PayloadTooLarge(
            f"entries compressed more than {limits.max_compression_ratio:g}:1 (MAX_ZIP_COMPRESSION_RATIO), "
            f"as zip bombs are: {_listing(inflating)}"
        )
    return entries


def _refuse_overlaps(infos: list[zipfile.ZipInfo]) -> None:
    """Entries sharing compressed bytes are how small zips inflate to petabytes."""
    spans = sorted(
        (
            info.header_offset,
            info.header_offset + LOCAL_HEADER.size + len(info.orig_filename.encode()) + info.compress_size,
            info.filename,
        )
        for info in infos
    )
    for (_, end, name), (next_start, _, next_name) in itertools.pairwise(spans):
        if next_start < end:
            raise InvalidInput(f"entries {name!r} and {next_name!r} overlap: the archive is malformed or a zip bomb")


# Plain string splitting: these run once per entry, and pathlib costs ~20 us a call.


def _parts(name: str) -> list[str]:
    return [part for part in name.replace("\\", "/").split("/") if part not in ("", ".")]


def _unsafe_name(name: str) -> bool:
    normalised = name.replace("\\", "/")
    return (
        normalised.startswith("/")
        or (len(normalised) > 1 and normalised[1] == ":")
        or ".." in normalised.split("/")
        or "\x00" in name
    )


def _is_junk(name: str) -> bool:
    parts = _parts(name)
    return (
        not parts
        or parts[0] == "__MACOSX"
        or any(part.startswith(".") for part in parts)
        or parts[-1].lower() in JUNK_NAMES
    )


def _suffix(info: zipfile.ZipInfo) -> str:
    base = info.filename.rsplit("/", 1)[-1]
    dot = base.rfind(".")
    return base[dot:].lower() if dot > 0 else ""


def _class_folder(name: str) -> int | None:
    parts = _parts(name)
    if len(parts) >= 2 and len(parts[-2]) == 1 and parts[-2].isdigit():
        return int(parts[-2])
    return None


def _labels_from_text(archive: zipfile.ZipFile, entries: list[zipfile.ZipInfo], image_count: int) -> np.ndarray:
    texts = [entry for entry in entries if _suffix(entry) == ".txt"]
    if not texts:
        raise InvalidInput(
            "no labels: add one .txt file with a label 0-9 per image, whitespace-separated, in the order "
            "of the sorted image names (or put the images in folders named 0-9)"
        )
    if len(texts) > 1:
        raise InvalidInput(f"found {len(texts)} .txt files ({_listing([t.filename for t in texts])}); keep one")
    name = texts[0].filename
    most = LABEL_BYTES_PER_IMAGE * image_count + LABEL_BYTES_SLACK
    if texts[0].file_size > most:  # read whole and split below: its size must stay near the labels' own
        raise PayloadTooLarge(
            f"{name} is {texts[0].file_size} bytes; {image_count} labels fit in far less (at most {most} bytes "
            "accepted): it should hold one label 0-9 per image, separated by whitespace"
        )
    try:
        text = archive.read(texts[0]).decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InvalidInput(f"{name} is not UTF-8 text ({error})") from error
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise InvalidInput(f"{name} cannot be read from the archive ({error})") from error
    labels, problems = [], []
    for line_number, line in enumerate(text.splitlines(), start=1):
        for token in line.split():
            if not token.lstrip("+-").isdigit():
                problems.append(f"line {line_number}: {token[:20]!r} is not an integer")
            elif not 0 <= int(token) <= 9:
                problems.append(f"line {line_number}: {token[:20]} is outside 0-9")
            else:
                labels.append(int(token))
    if problems:
        raise InvalidInput(f"{name} has {len(problems)} bad labels: {_listing(problems)}")
    if len(labels) != image_count:
        raise InvalidInput(
            f"{name} has {len(labels)} labels but the archive has {image_count} images: give one label per "
            "image, in the order of the sorted image names"
        )
    return np.array(labels, dtype=np.uint8)


def _decode_all(path: Path, entries: list[zipfile.ZipInfo], decode_chunks: DecodeChunks) -> np.ndarray:
    decoded = np.empty((len(entries), 28, 28), dtype=np.uint8)
    chunks: list[Chunk] = []
    chunk: Chunk = []
    size = 0
    for entry in entries:
        chunk.append(EntryRecord.of(entry))
        size += entry.file_size
        if len(chunk) >= CHUNK_IMAGES or size >= CHUNK_BYTES:
            chunks.append(chunk)
            chunk, size = [], 0
    if chunk:
        chunks.append(chunk)
    failures: list[ServiceError] = []
    start = 0
    for images, errors in decode_chunks(path, chunks):
        decoded[start : start + len(images)] = images
        failures.extend(errors[position] for position in sorted(errors))
        start += len(images)
    if failures:
        kind = PayloadTooLarge if any(isinstance(error, PayloadTooLarge) for error in failures) else InvalidInput
        messages = [error.detail for error in failures]
        raise kind(f"{len(failures)} of {len(entries)} images cannot be used: {_listing(messages)}")
    return decoded


def _listing(items: list[str]) -> str:
    shown = "; ".join(items[:MAX_LISTED])
    return shown + (f"; and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")
