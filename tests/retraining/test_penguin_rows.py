import numpy as np
import pytest

from prediction_service.core.errors import InvalidInput, PayloadTooLarge, ServiceError, UnsupportedMediaType
from prediction_service.retraining.penguin_rows import CsvLimits, read_penguin_rows

SPECIES = ["Adelie", "Chinstrap", "Gentoo"]
LIMITS = CsvLimits(max_rows=100, max_bytes=10_000)


def read(text: str | bytes, limits: CsvLimits = LIMITS):
    return read_penguin_rows(text.encode() if isinstance(text, str) else text, SPECIES, limits)


def refusal(text: str | bytes, limits: CsvLimits = LIMITS) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        read(text, limits)
    return caught.value


def test_columns_in_any_order_other_columns_ignored() -> None:
    rows = read(
        "island,flipper_length_mm,species,bill_length_mm,sex\r\n"
        "Torgersen,181,Adelie,39.1,male\r\n"
        "Dream,195,Chinstrap,46.5,female\r\n"
        "\r\n"  # blank lines are skipped
        'Biscoe,"217",Gentoo,46.1,\r\n'
    )
    assert rows.inputs.tolist() == [[39.1, 181.0], [46.5, 195.0], [46.1, 217.0]]
    assert rows.labels.tolist() == [0, 1, 2]
    assert rows.inputs.dtype == np.float64
    assert rows.label_counts() == {"Adelie": 1, "Chinstrap": 1, "Gentoo": 1}


def test_a_byte_order_mark_and_spaces_around_names_are_fine() -> None:
    rows = read("\ufeff species , bill_length_mm,flipper_length_mm\nAdelie,39.1,181\n".encode())
    assert rows.labels.tolist() == [0]


def test_every_bad_line_is_listed_by_kind_with_its_line_number() -> None:
    error = refusal(
        "species,bill_length_mm,flipper_length_mm\n"
        "Adelie,39.1,181\n"  # line 2: fine
        "Emperor,39.1,181\n"  # 3: unknown species
        "Adelie,abc,181\n"  # 4: not a number
        "Adelie,nan,181\n"  # 5: not finite
        "Adelie,391,181\n"  # 6: out of range (a typo)
        "Adelie,39.1\n"  # 7: a field missing
        "Adelie,39.1,181,extra\n"  # 8: a field too many
    )
    assert isinstance(error, InvalidInput)
    message = error.detail
    assert "unknown species (known: Adelie, Chinstrap, Gentoo): line 3" in message
    assert "not a finite number: lines 4, 5" in message
    assert "outside the plausible ranges (bill_length_mm 20-80 mm, flipper_length_mm 120-280 mm): line 6" in message
    assert "not 3 fields like the header: lines 7, 8" in message
    assert "line 2" not in message


def test_long_lists_show_the_first_twenty_and_how_many_more() -> None:
    message = refusal("species,bill_length_mm,flipper_length_mm\n" + "Adelie,x,181\n" * 25).detail
    assert "lines 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21 and 5 more" in message


def test_line_numbers_count_the_lines_of_the_file() -> None:
    """A quoted field over two lines: the next row's number is its line in the file, not its row count."""
    message = refusal('species,bill_length_mm,flipper_length_mm,note\nAdelie,39.1,181,"two\nlines"\nX,39,181,\n').detail
    assert "unknown species (known: Adelie, Chinstrap, Gentoo): line 4" in message


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        ("", InvalidInput, "the CSV is empty"),
        ("\n\n", InvalidInput, "the CSV is empty"),
        ("species,bill_length_mm,flipper_length_mm\n", InvalidInput, "has a header but no rows: add rows after line 1"),
        ("species,bill_length_mm\nAdelie,39.1\n", InvalidInput, "line 1: the header lacks flipper_length_mm"),
        ("Adelie,39.1,181\n", InvalidInput, "the header lacks species, bill_length_mm, flipper_length_mm"),
        (
            "species,species,bill_length_mm,flipper_length_mm\nAdelie,Adelie,39,181\n",
            InvalidInput,
            "names species more than once",
        ),
        (b"PK\x03\x04 a zip", UnsupportedMediaType, "not a CSV file"),
        (b"\x89PNG\r\n\x1a\n", UnsupportedMediaType, "not a CSV file"),
        (
            b"species,bill_length_mm,flipper_length_mm\nAd\xe9lie,39.1,181\n",
            InvalidInput,
            "not UTF-8 text (save the file as UTF-8): line 2",
        ),
    ],
)
def test_files_that_cannot_be_used(text: str | bytes, kind: type[ServiceError], message: str) -> None:
    error = refusal(text)
    assert type(error) is kind
    assert message in error.detail


def test_size_limits() -> None:
    header = "species,bill_length_mm,flipper_length_mm\n"
    assert len(read(header + "Adelie,39.1,181\n" * 3, CsvLimits(max_rows=3, max_bytes=10_000)).labels) == 3
    too_many = refusal(header + "Adelie,39.1,181\n" * 4, CsvLimits(max_rows=3, max_bytes=10_000))
    assert isinstance(too_many, PayloadTooLarge)
    assert "more than 3 rows (MAX_CSV_ROWS)" in too_many.detail
    text = header + "Adelie,39.1,181\n"
    too_big = refusal(text, CsvLimits(max_rows=100, max_bytes=len(text) - 1))
    assert isinstance(too_big, PayloadTooLarge)
    assert "MAX_CSV_BYTES" in too_big.detail
