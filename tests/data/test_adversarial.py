"""Inputs an adversarial user brought: every one ends in a quarantined row with its reason or a one-line
error naming the file, line or key. Real files through the real ingest and validate stages."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from gradus.config.params import load_params
from gradus.errors import ConfigError, DataError
from tasks import ingest, validate
from tests.conftest import BANKING77
from tests.helpers.data import params_for

MAPPING = {"text_column": "text", "label_column": "category"}


def banking(n: int = 120) -> pd.DataFrame:
    return pd.read_csv(BANKING77 / "train.csv").head(n)


def run_both(tmp_path: Path, sources: list[dict], **extra: object) -> tuple[dict, list[dict]]:
    params = params_for(tmp_path, sources, **{"validate.max_quarantine_share": 1.0,
                                              "validate.min_examples_per_class": 1, **extra})
    ingest.run(params)
    summary = validate.run(params)
    quarantined = [json.loads(line) for line in (tmp_path / "quarantine.jsonl").read_text().splitlines()]
    assert summary["rows_in"] == summary["rows_kept"] + summary["rows_quarantined"] == len(
        pd.read_parquet(tmp_path / "raw.parquet"))
    return summary, quarantined


def test_a_nul_byte_reaches_validation_whole_and_is_quarantined(tmp_path: Path) -> None:
    rows = banking()
    path = tmp_path / "nul.csv"
    rows.to_csv(path, index=False)
    text = "Can \0 I auto top up my card?"
    data = path.read_bytes().replace(rows.loc[3, "text"].encode(), text.encode(), 1)
    path.write_bytes(data)
    _, quarantined = run_both(tmp_path, [{"kind": "file", "path": str(path), **MAPPING}])
    [row] = [q for q in quarantined if q["source_row"] == 3]
    assert row["text"] == text and "text_control_chars" in row["failed_checks"]


def test_jsonl_values_that_are_not_strings_are_quarantined_as_what_they_are(tmp_path: Path) -> None:
    records = [{"text": t, "category": c} for t, c in banking(80)[["text", "category"]].itertuples(index=False)]
    records[1]["text"] = 42
    records[2]["text"] = True
    records[3]["text"] = ["card", "lost"]
    records[4]["text"] = {"body": "lost card"}
    records[5]["category"] = 7
    records[6]["category"] = False
    path = tmp_path / "typed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    summary, quarantined = run_both(tmp_path, [{"kind": "file", "path": str(path), **MAPPING}])
    by_row = {q["source_row"]: q for q in quarantined}
    assert [by_row[i]["text_type"] for i in (1, 2, 3, 4)] == ["number", "boolean", "array", "object"]
    assert [by_row[i]["text"] for i in (1, 3)] == ["42", '["card", "lost"]']
    assert all("text_type" in by_row[i]["failed_checks"] for i in (1, 2, 3, 4))
    assert [by_row[i]["label_type"] for i in (5, 6)] == ["number", "boolean"]
    assert all("label_type" in by_row[i]["failed_checks"] for i in (5, 6))
    assert "not a string in the source" in by_row[5]["reasons"]
    kept = pd.read_parquet(tmp_path / "rows.parquet")
    report = json.loads((tmp_path / "validation.json").read_text())
    assert "text_type" not in kept.columns and report["failed_rows"]["text_type"] == 4
    assert summary["rows_quarantined"] >= 6


@pytest.mark.parametrize("empty", ["header.csv", "empty.parquet"])
def test_a_source_with_no_rows_is_refused_unless_allowed(tmp_path: Path, empty: str) -> None:
    good = tmp_path / "good.csv"
    banking().to_csv(good, index=False)
    path = tmp_path / empty
    if empty.endswith(".csv"):
        path.write_text("text,category\n")
    else:
        banking().head(0).to_parquet(path)
    sources = [{"kind": "file", "path": str(good), **MAPPING}, {"kind": "file", "path": str(path), **MAPPING}]
    params = params_for(tmp_path, sources)
    with pytest.raises(DataError, match=rf"data.sources.1 \(file\): {path} has no data rows; .*allow_empty: true"):
        ingest.run(params)
    sources[1]["allow_empty"] = True
    assert ingest.run(params_for(tmp_path, sources))["rows"] == 120


def test_an_unclosed_quote_is_named_by_line_not_turned_into_garbage_rows(tmp_path: Path) -> None:
    lines = [f"{t.replace(',', ' ')},{c}" for t, c in banking(40)[["text", "category"]].itertuples(index=False)]
    lines[9] = '"I lost my card yesterday,lost_or_stolen_card'  # the quote never closes
    path = tmp_path / "quote.csv"
    path.write_text("text,category\n" + "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"{path}: line 11: .*quote opened on line 11 is probably never closed"):
        ingest.run(params_for(tmp_path, [{"kind": "file", "path": str(path), **MAPPING}]))
    lines[9] = '"I lost my card yesterday,lost_or_stolen_card'
    lines[20] = 'where is it",card_arrival'  # closed much later: rows swallowed into one field
    path.write_text("text,category\n" + "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"{path}: line 11: a quoted field runs to line 22 and holds \d+ lines"):
        ingest.run(params_for(tmp_path, [{"kind": "file", "path": str(path), **MAPPING}]))


def test_delimiters_directories_and_byte_order_marks(tmp_path: Path) -> None:
    rows = banking(60)
    semicolon = tmp_path / "semi.csv"
    rows.to_csv(semicolon, index=False, sep=";")
    with pytest.raises(DataError, match="looks semicolon-delimited: set delimiter: ';' for this source"):
        ingest.run(params_for(tmp_path, [{"kind": "file", "path": str(semicolon), **MAPPING}]))
    params = params_for(tmp_path, [{"kind": "file", "path": str(semicolon), "delimiter": ";", **MAPPING}])
    assert ingest.run(params)["rows"] == 60
    with pytest.raises(DataError, match=rf"{tmp_path}: is a directory; give a file, or a glob such as"):
        ingest.run(params_for(tmp_path, [{"kind": "file", "path": str(tmp_path), **MAPPING}]))
    bom_jsonl, bom_csv = tmp_path / "bom.jsonl", tmp_path / "bom.csv"
    bom_jsonl.write_bytes(b"\xef\xbb\xbf" + rows.to_json(orient="records", lines=True).encode())
    bom_csv.write_bytes(b"\xef\xbb\xbf" + rows.to_csv(index=False).encode())
    for path in (bom_jsonl, bom_csv):
        ingest.run(params_for(tmp_path, [{"kind": "file", "path": str(path), **MAPPING}]))
        raw = pd.read_parquet(tmp_path / "raw.parquet")
        assert raw["text"].tolist() == rows["text"].tolist(), path


def test_flag_counts_in_the_report_match_the_flags_file(tmp_path: Path) -> None:
    rows = pd.read_csv(BANKING77 / "train.csv").head(3000).copy()
    rng = pd.Series(range(len(rows))).sample(frac=0.05, random_state=3).index
    classes = sorted(rows["category"].unique())
    rows.loc[rng, "category"] = [classes[(classes.index(c) + 7) % len(classes)] for c in rows.loc[rng, "category"]]
    conflict = rows.loc[rng[:10]].assign(category=rows.loc[rng[:10], "category"].map(
        lambda c: classes[(classes.index(c) + 1) % len(classes)]))
    path = tmp_path / "noisy.csv"
    pd.concat([rows, conflict]).to_csv(path, index=False)
    _, quarantined = run_both(tmp_path, [{"kind": "file", "path": str(path), **MAPPING}])
    report = json.loads((tmp_path / "validation.json").read_text())
    flags = [json.loads(line) for line in (tmp_path / "flags.jsonl").read_text().splitlines()]
    assert report["flagged_rows"]["label_noise"] == sum(f["noise_flag"] for f in flags) > 0
    assert report["flagged_quarantined_rows"]["label_noise"] == sum(bool(q["noise_flag"]) for q in quarantined)


@pytest.mark.parametrize(("text", "message"), [
    ("train:\n  epochs: 3\n  epochs: 5\n", "duplicate key 'train.epochs' on lines 2 and 3"),
    ("train:\n  epochs: .inf\n", "'train.epochs': input should be a finite number"),
    ("train:\n  batch_size: true\n", "'train.batch_size': expects a number, got true"),
    ("validate:\n  min_text_chars: 50\n  max_text_chars: 10\n", "min_text_chars (50) is above max_text_chars (10)"),
    ("", "the file is empty"),
    ("data:\n  sources:\n    - kind: file\n      pth: x.csv\n",
     "unknown key 'data.sources.0.pth' (allowed for kind file: allow_empty, delimiter, format"),
])
def test_bad_params_are_one_line_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as failure:
        load_params(path)
    assert message in str(failure.value) and "\n" not in str(failure.value)
    assert "tuple should have at least" not in str(failure.value)
