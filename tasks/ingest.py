"""Ingest stage: read every configured source into one raw snapshot (text, label, source, source_row)."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import pandas as pd

from gradus import demo
from gradus.config import DataConfig, DemoSource, FileSource, Params
from gradus.errors import DataError
from gradus.io import read_table, write_json, write_parquet

COLUMNS = ["text", "label", "source", "source_row"]


def load_demo(source: DemoSource) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The embedded demo dataset, as a source."""
    frame = demo.generate(source.rows, source.seed)
    uri = f"demo://support-intents?rows={source.rows}&seed={source.seed}"
    return _frame(frame["text"], frame["label"], uri), {"uri": uri, "rows": len(frame)}


def load_file(source: FileSource, path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One local table file, with its text and label columns mapped."""
    table = read_table(path, source.format)
    missing = [c for c in (source.text_column, source.label_column) if c not in table.columns]
    if missing:
        found = ", ".join(map(str, table.columns[:10]))
        hint = " (one column only: is the delimiter a comma?)" if len(table.columns) == 1 else ""
        raise DataError(f"{path}: missing column(s) {missing}; found [{found}]{hint}. "
                        "Set text_column / label_column for this source in params.yaml (data.sources)")
    stat = path.stat()
    info = {"uri": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "rows": len(table)}
    return _frame(table[source.text_column], table[source.label_column], str(path)), info


def _frame(text: pd.Series, label: pd.Series, uri: str) -> pd.DataFrame:
    return pd.DataFrame({
        "text": _as_text(text),
        "label": _as_text(label),
        "source": uri,
        "source_row": range(len(text)),
    })


def _as_text(values: pd.Series) -> pd.Series:
    """Strings stay strings, missing stays None (never the string 'nan')."""
    return pd.Series([None if _missing(v) else str(v) for v in values], dtype=object)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def expand(source: FileSource) -> list[Path]:
    """The files a file source names (a path or a glob), sorted for a stable snapshot."""
    matches = sorted(Path(p) for p in glob.glob(source.path, recursive=True))
    if not matches:
        raise DataError(f"data.sources: no file matches {source.path!r}; check the path (relative to the project)")
    return matches


def collect(cfg: DataConfig) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Read every source, in order, into one frame; normalise labels per params."""
    frames, manifest = [], []
    for source in cfg.sources:
        if isinstance(source, DemoSource):
            loaded = [load_demo(source)]
        else:
            loaded = [load_file(source, path) for path in expand(source)]
        for frame, info in loaded:
            frames.append(frame)
            manifest.append({"kind": source.kind, **info})
    raw = pd.concat(frames, ignore_index=True)
    raw["label"] = normalize_labels(raw["label"], cfg.label_case)
    return raw[COLUMNS], manifest


def normalize_labels(labels: pd.Series, case: str) -> pd.Series:
    """Trim labels and apply the case policy; missing stays missing."""
    def fix(value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        return value.lower() if case == "lower" else value

    return labels.map(fix).astype(object)


def run(params: Params) -> dict[str, Any]:
    """Write the raw snapshot and its manifest."""
    raw, manifest = collect(params.data)
    write_parquet(raw, Path(params.paths.raw))
    write_json({"rows": len(raw), "sources": manifest}, Path(params.paths.raw_manifest))
    return {"rows": len(raw), "sources": len(manifest), "snapshot": params.paths.raw}
