import io
import os
import zipfile
from pathlib import Path

import pytest

from prediction_service.retraining.zip_entries import EntryReader, EntryRecord

CONTENTS = {"a.png": os.urandom(300) + b"x" * 700, "dir/b.txt": b"1 2 3\n" * 50, "é.png": b"\x89PNG" + b"\0" * 64}


def write_zip(path: Path, compression: int = zipfile.ZIP_DEFLATED, contents: dict[str, bytes] = CONTENTS) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in contents.items():
            archive.writestr(name, data)
    return path


def read_all(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        records = [EntryRecord.of(info) for info in archive.infolist()]
    with EntryReader(path) as reader:
        return {record.name: reader.read(record) for record in records}


@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_entries_read_as_zipfile_reads_them(tmp_path: Path, compression: int) -> None:
    assert read_all(write_zip(tmp_path / "a.zip", compression)) == CONTENTS


def test_entries_written_with_data_descriptors(tmp_path: Path) -> None:
    # Zips written to a stream (no seeking back) give sizes and CRC after the data; the directory has them.
    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.buffer = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, data) -> int:  # type: ignore[override]
            self.buffer += data
            return len(data)

    stream = Unseekable()
    with zipfile.ZipFile(stream, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in CONTENTS.items():
            archive.writestr(name, data)
    path = tmp_path / "streamed.zip"
    path.write_bytes(bytes(stream.buffer))
    with zipfile.ZipFile(path) as archive:
        assert all(info.flag_bits & 0x08 for info in archive.infolist())
    assert read_all(path) == CONTENTS


def corrupted(path: Path, change) -> tuple[Path, EntryRecord]:
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("a.png")
    data = bytearray(path.read_bytes())
    change(data, info)
    path.write_bytes(bytes(data))
    return path, EntryRecord.of(info)


def read_one(path: Path, record: EntryRecord) -> bytes:
    with EntryReader(path) as reader:
        return reader.read(record)


def test_damaged_data_is_refused(tmp_path: Path) -> None:
    def flip_a_byte(data: bytearray, info: zipfile.ZipInfo) -> None:
        data[info.header_offset + 30 + len("a.png") + 40] ^= 0xFF

    path, record = corrupted(write_zip(tmp_path / "a.zip", zipfile.ZIP_STORED), flip_a_byte)
    with pytest.raises(zipfile.BadZipFile, match="CRC-32"):
        read_one(path, record)


def test_a_local_header_naming_another_file_is_refused(tmp_path: Path) -> None:
    def rename(data: bytearray, info: zipfile.ZipInfo) -> None:
        data[info.header_offset + 30 : info.header_offset + 35] = b"z.png"

    path, record = corrupted(write_zip(tmp_path / "a.zip"), rename)
    with pytest.raises(zipfile.BadZipFile, match="names another file"):
        read_one(path, record)


def test_a_directory_that_understates_the_size_is_refused(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "a.zip", contents={"a.png": b"\0" * 1_000_000})
    with zipfile.ZipFile(path) as archive:
        record = EntryRecord.of(archive.getinfo("a.png"))
    lying = record._replace(file_size=1000)  # inflating stops at the declared size; the CRC then differs
    with pytest.raises(zipfile.BadZipFile, match="size or CRC-32"):
        read_one(path, lying)


def test_a_header_past_the_end_is_refused(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "a.zip")
    with zipfile.ZipFile(path) as archive:
        record = EntryRecord.of(archive.getinfo("a.png"))
    with pytest.raises(zipfile.BadZipFile, match="cut off"):
        read_one(path, record._replace(header_offset=path.stat().st_size - 10))
    with pytest.raises(zipfile.BadZipFile, match="signature"):
        read_one(path, record._replace(header_offset=1))
