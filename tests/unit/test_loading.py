"""fairtrain.data.loading: read_raw_table, iter_raw_chunks and csv_file_lines on small files
written to tmp_path."""

from __future__ import annotations

import gzip

import pandas as pd
import pytest

from fairtrain.data.loading import csv_file_lines, iter_raw_chunks, read_raw_table
from fairtrain.errors import DataValidationError


def test_valid_csv_is_read_as_strings_exactly(write_csv, raw_rows, columns):
    path = write_csv(raw_rows)
    frame = read_raw_table(path)
    assert list(frame.columns) == columns
    assert len(frame) == len(raw_rows)
    assert frame.loc[0, "age"] == "39"  # no type guessing
    assert frame.loc[5, "workclass"] == "?"  # no NA parsing: the schema decides what is missing
    assert all(pd.api.types.is_string_dtype(frame[c]) for c in columns)


def test_na_and_empty_cells_stay_data(write_csv, raw_rows):
    rows = raw_rows
    rows[0][1] = "NA"
    rows[1][1] = ""
    frame = read_raw_table(write_csv(rows))
    assert frame.loc[0, "workclass"] == "NA"
    assert frame.loc[1, "workclass"] == ""
    assert not frame.isna().any().any()


def test_gzipped_csv(tmp_path):
    path = tmp_path / "table.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        handle.write("a,b\n1,x\n2,y\n")
    frame = read_raw_table(path)
    assert frame.to_dict("list") == {"a": ["1", "2"], "b": ["x", "y"]}


def test_empty_file_is_reported_as_empty(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(DataValidationError, match="empty") as caught:
        read_raw_table(path)
    assert str(path) in str(caught.value)


def test_duplicate_header_names_are_named(write_csv):
    header = ["age", "sex", "age", "race"]
    path = write_csv([["1", "Male", "2", "White"]], header=header)
    with pytest.raises(DataValidationError, match="duplicate column names") as caught:
        read_raw_table(path)
    assert "['age']" in str(caught.value)


def test_duplicate_header_in_gzipped_csv(tmp_path):
    path = tmp_path / "dup.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("x,y,y\n1,2,3\n")
    with pytest.raises(DataValidationError, match=r"\['y'\]"):
        read_raw_table(path)


def test_genuine_dotted_header_is_not_a_duplicate(write_csv):
    # pandas would mangle a duplicate "x" into "x.1"; a real "x.1" column must still load.
    frame = read_raw_table(write_csv([["1", "2"]], header=["x", "x.1"]))
    assert list(frame.columns) == ["x", "x.1"]


def test_non_utf8_bytes_are_reported(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("name,city\nJosé,Zürich\n".encode("latin-1"))
    with pytest.raises(DataValidationError, match="UTF-8") as caught:
        read_raw_table(path)
    assert str(path) in str(caught.value)


def test_malformed_csv_is_reported(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("a,b\n1,2\n3,4,5,6\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match="malformed CSV"):
        read_raw_table(path)


def test_unsupported_extension(tmp_path):
    path = tmp_path / "table.xlsx"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(DataValidationError, match="unsupported file type"):
        read_raw_table(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataValidationError, match="file not found"):
        read_raw_table(tmp_path / "absent.csv")


def test_parquet_keeps_its_types(tmp_path):
    path = tmp_path / "table.parquet"
    pd.DataFrame({"age": [39.0, 50.0], "sex": ["Male", "Female"]}).to_parquet(path, index=False)
    frame = read_raw_table(path)
    assert frame["age"].tolist() == [39.0, 50.0]
    assert pd.api.types.is_float_dtype(frame["age"])


def test_unreadable_parquet_is_reported(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(DataValidationError, match="unreadable Parquet"):
        read_raw_table(path)


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_csv_file_lines_finds_every_row_after_empty_and_skipped_lines(tmp_path, suffix):
    """Empty lines (LF and CRLF) and rows the reader skips (wrong field count) shift the
    reader's numbering; every data row and every skipped row must map to its own line."""
    lines = ["a,b", "1,x", "", "2,y", "3,y,extra", "\r", "4,z", "5", "", "", "6,w", "7,v"]
    text = "\n".join(lines) + "\n"
    path = tmp_path / f"t{suffix}"
    if suffix == ".csv.gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, newline="")
    invalid: list = []
    table = pd.concat(iter_raw_chunks(path, chunk_rows=2, invalid_rows=invalid), ignore_index=True)
    assert table["a"].tolist() == ["1", "2", "4", "6", "7"]
    rows, skipped = csv_file_lines(path, range(len(table)), [r.number for r in invalid])
    for row, line in rows.items():
        assert lines[line - 1] == ",".join(table.loc[row, ["a", "b"]]), (row, line)
    assert len(rows) == len(table)
    assert {lines[skipped[r.number] - 1] for r in invalid} == {"3,y,extra", "5"}
    assert sorted(skipped.values()) == [5, 8]


def test_a_byte_order_mark_does_not_untype_the_first_column(tmp_path):
    """With a BOM the header used to be read as "\ufeffzip", so the first column missed its
    forced string type and pyarrow guessed a number: "007" became 7."""
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffzip,y\n007,a\n010,b\n".encode())
    (frame,) = iter_raw_chunks(path, 100)
    assert list(frame.columns) == ["zip", "y"]
    assert frame["zip"].tolist() == ["007", "010"]


def test_a_truncated_gzip_names_the_file(tmp_path):
    import random

    rng = random.Random(0)
    text = "a,b\n" + "".join(f"{rng.random()},{rng.random()}\n" for _ in range(20000))
    whole = gzip.compress(text.encode())
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataValidationError, match=r"cut\.csv\.gz: unreadable file \(truncated"):
        for _ in iter_raw_chunks(path, 1000):
            pass
