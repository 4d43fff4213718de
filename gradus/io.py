"""Reading and writing tables (CSV, JSONL, Parquet) and JSON reports, with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from gradus.errors import DataError

SNAPSHOT_COLUMNS = ["text", "label", "source", "source_row"]
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


def detect_format(path: Path, declared: str = "auto") -> str:
    """The table format of `path`: the declared one, else from the file extension."""
    if declared != "auto":
        return declared
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown file type '{path.suffix}'; use .csv, .jsonl or .parquet or set format")
    return fmt


def read_table(path: Path, fmt: str = "auto") -> pd.DataFrame:
    """Read a whole table as strings-or-missing, never guessing numeric types for text."""
    fmt = detect_format(path, fmt)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty; expected a header row and data rows")
    try:
        if fmt == "csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[], encoding="utf-8")
        if fmt == "jsonl":
            return read_jsonl(path)
        return pd.read_parquet(path)
    except DataError:
        raise
    except UnicodeDecodeError:
        raise utf8_error(path) from None
    except Exception as exc:  # the library's own message, with the file named
        raise DataError(f"{path}: cannot read as {fmt}: {exc}".replace("\n", " ")) from None


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
    with path.open(encoding="utf-8") as handle:
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
    return pd.DataFrame.from_records(records)


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
