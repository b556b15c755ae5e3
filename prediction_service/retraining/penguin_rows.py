"""Read a CSV of labelled penguins (`species,bill_length_mm,flipper_length_mm`), refusing it whole if any line is wrong.

The columns may come in any order and other columns are ignored. Every problem is
collected with its line number (as in the file, the header being line 1), so that
one answer lists all the lines to fix, the first few of each kind.
"""

import _csv
import csv
import io
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from prediction_service.core.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from prediction_service.models.penguins.knn import FEATURES, PLAUSIBLE_RANGES, TARGET

COLUMNS = (TARGET, *FEATURES)
MAX_LISTED = 20
# Files that are surely not a CSV, by their first bytes: archives, images, PDFs, executables.
BINARY_SIGNATURES = (b"PK\x03\x04", b"\x1f\x8b", b"%PDF", b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"\x7fELF", b"BZh")


@dataclass(frozen=True)
class CsvLimits:
    max_rows: int
    max_bytes: int


@dataclass(frozen=True)
class LabelledRows:
    inputs: np.ndarray  # (n, 2) float64: bill_length_mm, flipper_length_mm
    labels: np.ndarray  # (n,) uint8: indices into `species`
    species: list[str]

    def label_counts(self) -> dict[str, int]:
        counts = Counter(int(label) for label in self.labels)
        return {name: counts.get(index, 0) for index, name in enumerate(self.species)}


class _Problems:
    """Line numbers by kind of problem, in the order the kinds were first met."""

    def __init__(self) -> None:
        self.lines: dict[str, list[int]] = {}

    def add(self, kind: str, line: int) -> None:
        self.lines.setdefault(kind, []).append(line)

    def message(self) -> str:
        parts = []
        for kind, lines in self.lines.items():
            shown = ", ".join(str(line) for line in lines[:MAX_LISTED])
            more = f" and {len(lines) - MAX_LISTED} more" if len(lines) > MAX_LISTED else ""
            parts.append(f"{kind}: line{'s' if len(lines) > 1 else ''} {shown}{more}")
        return "fix these lines of the CSV (line 1 is the header); " + "; ".join(parts)


def read_penguin_rows(data: bytes, species: list[str], limits: CsvLimits) -> LabelledRows:
    """The rows of a CSV file's bytes, labels as indices into `species`; every problem is a ServiceError."""
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(f"the CSV is {len(data)} bytes, over the limit of {limits.max_bytes} (MAX_CSV_BYTES)")
    if data.startswith(BINARY_SIGNATURES) or b"\x00" in data[:4096]:
        raise UnsupportedMediaType(
            "this is not a CSV file: send a text file with the header species,bill_length_mm,flipper_length_mm"
        )
    text = _decode(data)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        while header is not None and not any(cell.strip() for cell in header):
            header = next(reader, None)  # blank lines before the header
        if header is None:
            raise InvalidInput("the CSV is empty: send a header species,bill_length_mm,flipper_length_mm and rows")
        header_line = reader.line_num
        columns = _columns(header, header_line)
        rows = _rows(reader, columns, len(header), species, limits.max_rows)
    except csv.Error as error:  # e.g. a quoted field never closed
        raise InvalidInput(f"line {reader.line_num}: the CSV cannot be read ({error}); fix its quoting") from error
    if not rows:
        raise InvalidInput(f"the CSV has a header but no rows: add rows after line {header_line}")
    return LabelledRows(
        np.array([features for features, _ in rows], dtype=np.float64),
        np.array([label for _, label in rows], dtype=np.uint8),
        list(species),
    )


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        problems = _Problems()
        for number, line in enumerate(data.split(b"\n"), start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                problems.add("not UTF-8 text (save the file as UTF-8)", number)
        raise InvalidInput(problems.message()) from None


def _columns(header: list[str], line: int) -> dict[str, int]:
    names = [cell.strip().lstrip("\ufeff").lower() for cell in header]
    missing = [name for name in COLUMNS if name not in names]
    if missing:
        raise InvalidInput(
            f"line {line}: the header lacks {', '.join(missing)}; it must name the columns "
            f"{','.join(COLUMNS)} (in any order; other columns are ignored), and has: {','.join(header)[:200]}"
        )
    repeated = [name for name in COLUMNS if names.count(name) > 1]
    if repeated:
        raise InvalidInput(f"line {line}: the header names {', '.join(repeated)} more than once; keep one of each")
    return {name: names.index(name) for name in COLUMNS}


def _rows(
    reader: "_csv.Reader", columns: dict[str, int], width: int, species: list[str], max_rows: int
) -> list[tuple[tuple[float, float], int]]:
    index = {name: position for position, name in enumerate(species)}
    limits = [PLAUSIBLE_RANGES[name] for name in FEATURES]
    ranges = ", ".join(f"{name} {low:g}-{high:g} mm" for name, (low, high) in zip(FEATURES, limits, strict=True))
    unknown = f"unknown species (known: {', '.join(species)})"
    problems = _Problems()
    rows: list[tuple[tuple[float, float], int]] = []
    line, count = reader.line_num, 0
    for cells in reader:
        first_line, line = line + 1, reader.line_num
        if not any(cell.strip() for cell in cells):
            continue  # blank lines, e.g. at the end
        count += 1
        if count > max_rows:
            raise PayloadTooLarge(f"the CSV has more than {max_rows} rows (MAX_CSV_ROWS): split it into several files")
        if len(cells) != width:
            problems.add(f"not {width} fields like the header", first_line)
            continue
        label = index.get(cells[columns[TARGET]].strip())
        if label is None:
            problems.add(unknown, first_line)
        values = []
        for name in FEATURES:
            try:
                value = float(cells[columns[name]])
            except ValueError:
                value = math.nan
            values.append(value)
        if not all(math.isfinite(value) for value in values):
            problems.add(f"{' or '.join(FEATURES)} not a finite number", first_line)
        elif not all(low <= value <= high for value, (low, high) in zip(values, limits, strict=True)):
            problems.add(f"measurements outside the plausible ranges ({ranges})", first_line)
        elif label is not None:
            rows.append(((values[0], values[1]), label))
    if problems.lines:
        raise InvalidInput(problems.message())
    return rows
