"""Reading and writing tables (CSV, JSONL, Parquet) and JSON reports, with errors that name the file."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pandas as pd

from gradus.errors import DataError

SNAPSHOT_COLUMNS = ["text", "label", "source", "source_row"]
# Beside text and label in the raw snapshot: the JSON type of a value that was not a string in its source
# (null for strings). Validation quarantines such rows; they never reach the validated data.
TYPE_COLUMNS = ["text_type", "label_type"]
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet",
           ".conll": "conll"}
CONLL_COLUMNS = ("tokens", "tags")  # a CoNLL file's sentences as a table: one row per sentence, two list columns


def detect_format(path: Path, declared: str = "auto") -> str:
    """The table format of `path`: the declared one, else from the file extension."""
    if declared != "auto":
        return declared
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown file type '{path.suffix}'; use .csv, .jsonl, .parquet or .conll or set "
                        "format")
    return fmt


def read_table(path: Path, fmt: str = "auto", delimiter: str = ",") -> pd.DataFrame:
    """Read a whole table, never guessing numeric types for CSV text; JSONL and Parquet values keep their
    types (a number where a text belongs must reach validation as a number, not as its string)."""
    fmt = detect_format(path, fmt)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty; expected a header row and data rows")
    try:
        if fmt == "csv":
            return read_csv(path, delimiter)
        if fmt == "jsonl":
            return read_jsonl(path)
        if fmt == "conll":
            from gradus.spans import read_conll

            sentences = read_conll(path)
            return pd.DataFrame({CONLL_COLUMNS[0]: pd.Series([t for t, _ in sentences], dtype=object),
                                 CONLL_COLUMNS[1]: pd.Series([g for _, g in sentences], dtype=object)})
        return pd.read_parquet(path)
    except DataError:
        raise
    except UnicodeDecodeError:
        raise utf8_error(path) from None
    except Exception as exc:  # the library's own message, with the file named
        raise DataError(f"{path}: cannot read as {fmt}: {exc}".replace("\n", " ")) from None


# A quoted field that holds this many lines which themselves parse as whole rows is not a text with line
# breaks but rows swallowed by a quote that was never closed.
SWALLOWED_ROWS = 2
# csv's default field limit (128 KiB) would make a merely long text a parse error instead of a row that
# validation quarantines for its length.
MAX_FIELD_CHARS = 64 << 20
_DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def read_csv(path: Path, delimiter: str = ",") -> pd.DataFrame:
    """CSV through Python's csv module: every character survives (NUL included, where pandas' C parser cuts
    the text), a UTF-8 byte-order mark is dropped, and broken quoting or field counts are named by line."""
    csv.field_size_limit(MAX_FIELD_CHARS)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        first_line = handle.readline()
        handle.seek(0)
        reader = csv.reader(handle, delimiter=delimiter, strict=True)
        start = 1
        try:
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: no header row; expected a header row and data rows")
            width, rows = len(header), []
            start = reader.line_num + 1
            for record in reader:
                if record:  # the csv module yields [] for a blank line
                    _check_record(path, record, width, start, reader.line_num, delimiter, first_line)
                    rows.append(record)
                start = reader.line_num + 1
        except csv.Error as exc:
            raise DataError(f"{path}: line {start}: cannot parse ({exc}); a quote opened on line {start} is "
                            "probably never closed: quote the whole text and double any quote inside it") from None
    return pd.DataFrame(rows, columns=header, dtype=object)


def _check_record(path: Path, record: list[str], width: int, start: int, end: int, delimiter: str,
                  header_line: str) -> None:
    if len(record) != width:
        raise DataError(f"{path}: line {start}: {len(record)} fields where the header has {width}; quote texts "
                        f"that contain the delimiter {delimiter!r}" + delimiter_hint(header_line, delimiter))
    if end > start:
        inner = [line for field in record if "\n" in field for line in field.splitlines()[1:]]
        looks_like_rows = sum(len(line.split(delimiter)) == width for line in inner)
        if looks_like_rows >= SWALLOWED_ROWS:
            raise DataError(f"{path}: line {start}: a quoted field runs to line {end} and holds {looks_like_rows} "
                            f"lines that look like rows; a quote opened on line {start} is probably not closed "
                            "where it should be")


def delimiter_hint(header_line: str, delimiter: str) -> str:
    """'; the header looks semicolon-delimited: set delimiter: ';' for this source' when another delimiter
    splits the header better than the configured one."""
    counts = {d: header_line.count(d) for d in _DELIMITERS if d != delimiter}
    best = max(counts, key=lambda d: counts[d])
    if counts[best] > header_line.count(delimiter):
        return f"; the header looks {_DELIMITERS[best]}-delimited: set delimiter: {best!r} for this source"
    return ""


def utf8_error(path: Path) -> DataError:
    """Where a file stops being UTF-8: the parsers report offsets within a buffer, not the file."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return DataError(f"{path}: not valid UTF-8 at byte offset {exc.start} (line {line}); "
                         "re-save the file as UTF-8")
    return DataError(f"{path}: not valid UTF-8; re-save the file as UTF-8")


def read_jsonl(path: Path) -> pd.DataFrame:
    """JSON Lines with the standard json module: escapes such as lone surrogates survive (pandas' reader
    drops them silently), and a bad line is named."""
    records = []
    with path.open(encoding="utf-8-sig") as handle:  # a byte-order mark is accepted, as for CSV
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {number} is not valid JSON ({exc.msg}); fix or remove it") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}: line {number} is not a JSON object; expected one object per line")
            records.append(record)
    # Column by column as objects: from_records would turn a column of numbers and nulls into floats.
    columns = list(dict.fromkeys(key for record in records for key in record))
    return pd.DataFrame({c: pd.Series([r.get(c) for r in records], dtype=object) for c in columns})


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write a Parquet file deterministically (same frame, same bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False, compression="zstd")


def write_json(data: Any, path: Path) -> None:
    """Write indented, key-sorted JSON (stable diffs, stable DVC hashes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    """Read a JSON file written by a stage, naming it if it is missing."""
    if not path.is_file():
        raise DataError(f"{path}: not found; run the stage that writes it first (dvc repro)")
    return json.loads(path.read_text(encoding="utf-8"))
