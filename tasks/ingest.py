"""Ingest stage: read every configured source into one raw snapshot (text, label, source, source_row)."""

from __future__ import annotations

import glob
import re
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from gradus import demo, storage
from gradus.config import DataConfig, DemoSource, FeedbackSource, FileSource, HFSource, Params, S3Source, Source
from gradus.errors import DataError
from gradus.io import FORMATS, SNAPSHOT_COLUMNS, read_table, write_json, write_parquet

Loaded = list[tuple[pd.DataFrame, dict[str, Any]]]
_SURROGATES = re.compile("[\ud800-\udfff]")


def load_demo(source: DemoSource) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The embedded demo dataset, as a source."""
    frame = demo.generate(source.rows, source.seed)
    uri = f"demo://support-intents?rows={source.rows}&seed={source.seed}"
    return _frame(frame["text"], frame["label"], uri), {"uri": uri, "rows": len(frame)}


def load_file(source: FileSource | FeedbackSource | S3Source, path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One local table file, with its text and label columns mapped."""
    table = read_table(path, source.format)
    missing = [c for c in (source.text_column, source.label_column, *source.metadata_columns)
               if c not in table.columns]
    if missing:
        found = ", ".join(map(str, table.columns[:10]))
        hint = " (one column only: is the delimiter a comma?)" if len(table.columns) == 1 else ""
        raise DataError(f"{path}: missing column(s) {missing}; found [{found}]{hint}. "
                        "Set text_column / label_column / metadata_columns for this source in params.yaml "
                        "(data.sources)")
    stat = path.stat()
    info = {"uri": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "rows": len(table)}
    extra = {column: table[column] for column in source.metadata_columns}
    return _frame(table[source.text_column], table[source.label_column], str(path), extra), info


def _frame(text: pd.Series, label: pd.Series, uri: str, extra: dict[str, pd.Series] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame({
        "text": _as_text(text),
        "label": _as_text(label),
        "source": uri,
        "source_row": range(len(text)),
    })
    for column, values in (extra or {}).items():
        frame[column] = _as_text(values.reset_index(drop=True))
    return frame


def _as_text(values: pd.Series) -> pd.Series:
    """Strings stay strings, missing stays None (never the string 'nan')."""
    return pd.Series([None if _missing(v) else _storable(str(v)) for v in values], dtype=object)


def _storable(text: str) -> str:
    """Lone surrogates (from JSON escapes or lossy decodes) cannot be written as UTF-8: mark them with
    U+FFFD so the snapshot can store the row and validation quarantines it as invalid Unicode."""
    if text.isascii():
        return text
    return _SURROGATES.sub("\ufffd", text)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def expand(pattern: str) -> list[Path]:
    """The files a path or glob names, sorted for a stable snapshot."""
    matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
    if not matches:
        raise DataError(f"data.sources: no file matches {pattern!r}; check the path (relative to the project)")
    return matches


def load_s3(source: S3Source | FeedbackSource, uri: str, endpoint_url: str | None = None) -> Loaded:
    """Every table object under an s3:// prefix; errors name the object, not a temporary file."""
    client = storage.s3_client(endpoint_url)
    loaded = []
    with tempfile.TemporaryDirectory(prefix="gradus-s3-") as scratch:
        for obj in storage.list_objects(client, uri, tuple(FORMATS)):
            local = storage.download(client, obj, Path(scratch))
            try:
                frame, _ = load_file(source, local)
            except DataError as exc:
                raise DataError(str(exc).replace(str(local), obj.uri)) from None
            frame["source"] = obj.uri
            loaded.append((frame, {"uri": obj.uri, "etag": obj.etag, "size": obj.size, "rows": len(frame)}))
    return loaded


def load_hf(source: HFSource) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A Hugging Face dataset split; integer ClassLabel labels become their names."""
    import datasets

    try:
        if source.path is not None:
            dataset = datasets.load_from_disk(source.path)
            if isinstance(dataset, datasets.DatasetDict):
                if source.split not in dataset:
                    raise DataError(f"{source.path}: no split {source.split!r} (has {sorted(dataset)}); set split")
                dataset = dataset[source.split]
        else:
            dataset = datasets.load_dataset(source.name, source.config, split=source.split, revision=source.revision)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"hf dataset {source.path or source.name}: cannot load: {exc}".replace("\n", " ")) from None
    missing = [c for c in (source.text_column, source.label_column, *source.metadata_columns)
               if c not in dataset.column_names]
    if missing:
        raise DataError(f"hf dataset {source.path or source.name}: missing column(s) {missing}; found "
                        f"{dataset.column_names}. Set text_column / label_column for this source")
    labels = dataset[source.label_column]
    feature = dataset.features[source.label_column]
    if isinstance(feature, datasets.ClassLabel):
        labels = [None if x is None or x < 0 else feature.int2str(x) for x in labels]
    uri = f"hf://{source.path or source.name}?split={source.split}"
    info = {"uri": uri, "fingerprint": dataset._fingerprint, "rows": len(dataset)}
    extra = {column: pd.Series(dataset[column], dtype=object) for column in source.metadata_columns}
    return _frame(pd.Series(dataset[source.text_column], dtype=object), pd.Series(labels, dtype=object), uri,
                  extra), info


def load_source(source: Source) -> Loaded:
    """Read one configured source into (frame, manifest entry) pairs, one per file or object."""
    if isinstance(source, DemoSource):
        return [load_demo(source)]
    if isinstance(source, HFSource):
        return [load_hf(source)]
    if isinstance(source, S3Source):
        return load_s3(source, source.uri, source.endpoint_url)
    if source.path.startswith("s3://"):  # feedback kept in S3
        return load_s3(source, source.path)
    return [load_file(source, path) for path in expand(source.path)]


def collect(cfg: DataConfig) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Read every source, in order, into one frame; normalise labels per params."""
    frames, manifest = [], []
    for source in cfg.sources:
        for frame, info in load_source(source):
            frames.append(frame)
            manifest.append({"kind": source.kind, **info})
    raw = pd.concat(frames, ignore_index=True)
    raw["label"] = normalize_labels(raw["label"], cfg.label_case)
    extras = sorted({c for source in cfg.sources for c in getattr(source, "metadata_columns", ())})
    if extras:  # a source without a metadata column gets None there, never the string 'nan'
        raw[extras] = raw[extras].astype(object).where(raw[extras].notna(), None)
    return raw[[*SNAPSHOT_COLUMNS, *extras]], manifest


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
