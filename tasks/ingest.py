"""Ingest stage: read every configured source into one raw snapshot (text, label, source, source_row)."""

from __future__ import annotations

import json
import numbers
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradus import storage
from gradus.catalogue import read_catalogue
from gradus.config.pipeline import (
    DataConfig,
    DemoSource,
    FeedbackSource,
    FileSource,
    HFSource,
    S3Source,
    Source,
    StageParams,
)
from gradus.errors import DataError
from gradus.io import CONLL_COLUMNS, SNAPSHOT_COLUMNS, TYPE_COLUMNS, write_json, write_parquet
from gradus.spans import BIO_CELL
from gradus.task_types.seam import DEFAULT_TASK, task_type

Loaded = list[tuple[pd.DataFrame, dict[str, Any]]]
_SURROGATES = re.compile("[\ud800-\udfff]")


def load_demo(source: DemoSource, task: str = DEFAULT_TASK) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The embedded demo dataset of the task type (support intents; tickets with label sets), as a source."""
    frame, name = task_type(task).demo(source.rows, source.seed)
    uri = f"demo://{name}?rows={source.rows}&seed={source.seed}"
    return _frame(frame["text"], frame["label"], uri), {"uri": uri, "rows": len(frame)}


SOURCE_FIX = "Set text_column / label_column / metadata_columns for this source in params.yaml (data.sources)"


def token_columns(source: Source) -> tuple[str, str] | None:
    """(tokens column, tags column) of a source of tokens with BIO tags (a CoNLL file: its two columns), else None."""
    if source.tokens_column is not None and source.tags_column is not None:
        return source.tokens_column, source.tags_column
    fmt = getattr(source, "format", None)
    location = str(getattr(source, "path", None) or getattr(source, "uri", None) or "")
    conll = fmt == "conll" or (fmt == "auto" and location.lower().endswith(".conll"))
    return CONLL_COLUMNS if conll else None


def load_tables(source: FileSource | FeedbackSource | S3Source) -> Loaded:
    """Every file or object a table source names (file, glob or s3:// prefix), its columns mapped."""
    location = source.uri if isinstance(source, S3Source) else source.path
    endpoint = source.endpoint_url if isinstance(source, S3Source) else None
    bio = token_columns(source)
    columns = (*(bio or (source.text_column, source.label_column)), *source.metadata_columns)
    loaded = []
    for table in storage.read_tables(location, columns=columns, fix=SOURCE_FIX, fmt=source.format,
                                     delimiter=source.delimiter, endpoint_url=endpoint):
        extra = {column: table.frame[column] for column in source.metadata_columns}
        if bio is not None:
            texts, cells = tagged_tokens(table.frame[bio[0]], table.frame[bio[1]])
            frame = _frame(texts, cells, table.uri, extra)
            frame.loc[frame["label"].notna() & frame["label_type"].eq("object"), "label_type"] = BIO_CELL
            loaded.append((frame, {"uri": table.uri, **table.info, "rows": len(frame)}))
            continue
        labels = table.frame[source.label_column]
        if source.label_separator is not None:  # label sets written as text: stored as the lists they are
            labels = labels.map(lambda cell: cell.split(source.label_separator) if isinstance(cell, str) else cell)
        frame = _frame(table.frame[source.text_column], labels, table.uri, extra)
        loaded.append((frame, {"uri": table.uri, **table.info, "rows": len(frame)}))
    return loaded


def tagged_tokens(tokens: pd.Series, tags: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(texts, label cells) of rows of tokens with BIO tags: the text is the tokens joined by single spaces (where
    they are a list of strings; else None, and the row is quarantined for its missing text) and the cell keeps
    both lists ({tokens, tags}) for the task type to read into spans (gradus/spans.py from_bio), so a row whose
    tags do not fit its tokens reaches validation and is quarantined with the reason."""
    texts, cells = [], []
    for row_tokens, row_tags in zip(tokens, tags, strict=True):
        words = _plain(row_tokens) if not _missing(row_tokens) else None
        ok = isinstance(words, list) and all(isinstance(word, str) for word in words)
        texts.append(" ".join(words) if ok else None)
        cells.append({"tokens": words, "tags": _plain(row_tags) if not _missing(row_tags) else None})
    return pd.Series(texts, dtype=object), pd.Series(cells, dtype=object)


def _frame(text: pd.Series, label: pd.Series, uri: str, extra: dict[str, pd.Series] | None = None) -> pd.DataFrame:
    texts, text_types = _as_text(text)
    labels, label_types = _as_text(label)
    frame = pd.DataFrame({"text": texts, "label": labels, "source": uri, "source_row": range(len(text)),
                          "text_type": text_types, "label_type": label_types})
    for column, values in (extra or {}).items():
        frame[column] = _as_text(values.reset_index(drop=True))[0]
    return frame


def _as_text(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(texts, types): strings stay strings and missing stays None (never the string 'nan'). Any other value
    (a number, boolean, list or object from JSONL or Parquet) is kept visible as its JSON text, and its type
    goes beside it, so validation quarantines the row instead of training on '42' or "['a', 'b']"."""
    texts, types = [], []
    for value in values:
        if _missing(value):
            texts.append(None)
            types.append(None)
        elif isinstance(value, str):
            texts.append(_storable(value))
            types.append(None)
        else:
            texts.append(_storable(json.dumps(_plain(value), ensure_ascii=False, default=str)))
            types.append(value_type(value))
    return pd.Series(texts, dtype=object), pd.Series(types, dtype=object)


def value_type(value: Any) -> str:
    """The JSON name of a non-string value's type."""
    if isinstance(value, bool | np.bool_):
        return "boolean"
    if isinstance(value, numbers.Number):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list | tuple | np.ndarray):
        return "array"
    return type(value).__name__


def _plain(value: Any) -> Any:
    """numpy scalars and arrays (from Parquet) as plain Python values, for JSON."""
    return value.tolist() if isinstance(value, np.ndarray | np.generic) else value


def _storable(text: str) -> str:
    """Lone surrogates (from JSON escapes or lossy decodes) cannot be written as UTF-8: mark them with
    U+FFFD so the snapshot can store the row and validation quarantines it as invalid Unicode."""
    if text.isascii():
        return text
    return _SURROGATES.sub("\ufffd", text)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


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
    bio = token_columns(source)
    missing = [c for c in (*(bio or (source.text_column, source.label_column)), *source.metadata_columns)
               if c not in dataset.column_names]
    if missing:
        raise DataError(f"hf dataset {source.path or source.name}: missing column(s) {missing}; found "
                        f"{dataset.column_names}. Set text_column / label_column (or tokens_column / tags_column) "
                        "for this source")
    uri = f"hf://{source.path or source.name}?split={source.split}"
    info = {"uri": uri, "fingerprint": dataset._fingerprint, "rows": len(dataset)}
    extra = {column: pd.Series(dataset[column], dtype=object) for column in source.metadata_columns}
    if bio is not None:  # tokens with tags; tag ids (a sequence of ClassLabel, as NER datasets hold them) named
        tags = dataset[bio[1]]
        inner = getattr(dataset.features[bio[1]], "feature", None)
        if isinstance(inner, datasets.ClassLabel):
            tags = [None if row is None else [inner.int2str(x) if x is not None and x >= 0 else x for x in row]
                    for row in tags]
        texts, cells = tagged_tokens(pd.Series(dataset[bio[0]], dtype=object), pd.Series(tags, dtype=object))
        frame = _frame(texts, cells, uri, extra)
        frame.loc[frame["label"].notna() & frame["label_type"].eq("object"), "label_type"] = BIO_CELL
        return frame, info
    labels = dataset[source.label_column]
    feature = dataset.features[source.label_column]
    if isinstance(feature, datasets.ClassLabel):
        labels = [None if x is None or x < 0 else feature.int2str(x) for x in labels]
    return _frame(pd.Series(dataset[source.text_column], dtype=object), pd.Series(labels, dtype=object), uri,
                  extra), info


def load_source(source: Source, task: str = DEFAULT_TASK) -> Loaded:
    """Read one configured source into (frame, manifest entry) pairs, one per file or object."""
    if isinstance(source, DemoSource):
        return [load_demo(source, task)]
    return [load_hf(source)] if isinstance(source, HFSource) else load_tables(source)


def not_empty(source: Source, where: str, loaded: Loaded) -> Loaded:
    """Refuse a source that yielded no rows, unless it allows that (an empty export is usually a fault)."""
    if getattr(source, "allow_empty", False):
        return loaded
    for frame, info in loaded:
        if frame.empty:
            raise DataError(f"{where} ({source.kind}): {info['uri']} has no data rows; fix the "
                            f"export, remove the source, or set allow_empty: true on {where}")
    return loaded


def declared_sources(params: StageParams) -> list[tuple[str, Source]]:
    """params.yaml's data.sources, then the data catalogue's entries, each with where it is declared."""
    entries = read_catalogue(Path(params.paths.catalogue))
    return ([(f"data.sources.{position}", source) for position, source in enumerate(params.data.sources)]
            + [(entry.file, entry.source) for entry in entries])


def collect(cfg: DataConfig, sources: list[tuple[str, Source]] | None = None,
            task: str = DEFAULT_TASK) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Read every source, in order, into one frame; normalise labels per params."""
    sources = sources if sources is not None else [(f"data.sources.{i}", s) for i, s in enumerate(cfg.sources)]
    frames, manifest = [], []
    for where, source in sources:
        for frame, info in not_empty(source, where, load_source(source, task)):
            frames.append(frame)
            manifest.append({"kind": source.kind, "declared_in": where, **info})
    raw = pd.concat(frames, ignore_index=True)
    if task_type(task).label_cells_are_labels:  # (entity cells are structures: their types' case is set later)
        raw["label"] = normalize_labels(raw["label"], cfg.label_case)
    extras = sorted({c for _, source in sources for c in getattr(source, "metadata_columns", ())})
    if extras:  # a source without a metadata column gets None there, never the string 'nan'
        raw[extras] = raw[extras].astype(object).where(raw[extras].notna(), None)
    return raw[[*SNAPSHOT_COLUMNS, *TYPE_COLUMNS, *extras]], manifest


def normalize_labels(labels: pd.Series, case: str) -> pd.Series:
    """Trim labels and apply the case policy; missing stays missing."""
    def fix(value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        return value.lower() if case == "lower" else value

    return labels.map(fix).astype(object)


def run(params: StageParams) -> dict[str, Any]:
    """Write the raw snapshot and its manifest."""
    raw, manifest = collect(params.data, declared_sources(params), params.model.task)
    write_parquet(raw, Path(params.paths.raw))
    write_json({"rows": len(raw), "sources": manifest}, Path(params.paths.raw_manifest))
    return {"rows": len(raw), "sources": len(manifest), "snapshot": params.paths.raw}
