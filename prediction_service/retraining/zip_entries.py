"""The zip format at the byte level, where zipfile is too slow or checks too late.

`directory_records_at_most` bounds how many entries zipfile would parse, before
it parses them. `EntryReader` reads the entries of a zip whose central
directory was already read and checked. `zipfile.ZipFile.read` does that too, but it needs a ZipFile, which parses the
whole central directory again (~15 ms for 5,000 entries, in every decoding
process), and builds a file object per entry: ~10 us for a small PNG, where
slicing the mapped file costs ~2.5 us. Deflated and stored entries (what zip
tools write) are read here; other methods (bzip2, LZMA) go through zipfile.
Each entry gets zipfile's checks: the local header's signature and name, and
the size and CRC-32 the directory gives.
"""

import mmap
import struct
import zipfile
import zlib
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, then the name and extra field lengths at byte 26
LOCAL_HEADER_SIGNATURE = b"PK\x03\x04"
CENTRAL_DIRECTORY_SIGNATURE = b"PK\x01\x02"
UTF8_NAME_FLAG = 0x800
SCAN_BYTES = 16 * 1024 * 1024


def directory_records_at_most(path: Path) -> int:
    """An upper bound on the entries that zipfile would parse, counted before it does.

    zipfile reads the whole central directory into ZipInfo objects before any
    limit can be checked: 90 MB of minimal records are 2 million entries, 7 s
    and 800 MB. Every record starts with a signature, so counting signatures in
    the file (in C, ~1 ms a MB) bounds the count; data that happens to hold the
    signature only makes the bound higher.
    """
    count = 0
    tail = b""
    with path.open("rb") as handle:
        while chunk := handle.read(SCAN_BYTES):
            count += (tail + chunk).count(CENTRAL_DIRECTORY_SIGNATURE)
            tail = chunk[-(len(CENTRAL_DIRECTORY_SIGNATURE) - 1) :]
    return count


class EntryRecord(NamedTuple):
    """What the central directory says of an entry: all a decoding process needs to read it."""

    name: str
    raw_name: bytes
    header_offset: int
    compress_type: int
    compress_size: int
    file_size: int
    crc: int

    @classmethod
    def of(cls, info: zipfile.ZipInfo) -> "EntryRecord":
        encoding = "utf-8" if info.flag_bits & UTF8_NAME_FLAG else "cp437"
        return cls(
            info.filename,
            info.orig_filename.encode(encoding),
            info.header_offset,
            info.compress_type,
            info.compress_size,
            info.file_size,
            info.CRC,
        )


class EntryReader:
    """`with EntryReader(path) as reader: reader.read(record)`; errors are zipfile's (BadZipFile, ...)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file = path.open("rb")
        try:
            self._view = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        except BaseException:
            self._file.close()
            raise
        self._other_methods: zipfile.ZipFile | None = None

    def __enter__(self) -> "EntryReader":
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._other_methods is not None:
            self._other_methods.close()
        self._view.close()
        self._file.close()

    def read(self, entry: EntryRecord) -> bytes:
        if entry.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            if self._other_methods is None:
                self._other_methods = zipfile.ZipFile(self._path)
            return self._other_methods.read(entry.name)
        start = entry.header_offset
        header = self._view[start : start + LOCAL_HEADER.size]
        if len(header) < LOCAL_HEADER.size:
            raise zipfile.BadZipFile("its local header is cut off")
        signature, name_length, extra_length = LOCAL_HEADER.unpack(header)
        name_start = start + LOCAL_HEADER.size
        if signature != LOCAL_HEADER_SIGNATURE:
            raise zipfile.BadZipFile("bad local header signature")
        if self._view[name_start : name_start + name_length] != entry.raw_name:
            raise zipfile.BadZipFile("its local header names another file than the directory does")
        data_start = name_start + name_length + extra_length
        stored = self._view[data_start : data_start + entry.compress_size]
        if len(stored) != entry.compress_size:
            raise zipfile.BadZipFile("its data is cut off")
        if entry.compress_type == zipfile.ZIP_STORED or entry.file_size == 0:
            data = stored if entry.compress_type == zipfile.ZIP_STORED else b""
        else:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            data = inflater.decompress(stored, entry.file_size)  # never more than the declared size
        if len(data) != entry.file_size or zlib.crc32(data) != entry.crc:
            raise zipfile.BadZipFile("its size or CRC-32 differs from the directory's")
        return data
