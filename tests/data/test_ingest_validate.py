"""Ingest and validate on real files: column mapping, clear errors, and quarantine that loses nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from gradus.errors import DataError
from tasks import ingest, validate
from tests.conftest import BANKING77
from tests.helpers.data import params_for


def fault_injected(path: Path) -> int:
    """Banking77 rows with one of each fault; returns how many rows are bad."""
    rows = pd.read_csv(BANKING77 / "train.csv").head(300)
    rows = rows.rename(columns={"text": "utterance", "category": "intent"})
    rows.loc[5, "utterance"] = ""
    rows.loc[17, "utterance"] = "    "
    rows.loc[40, "intent"] = ""
    rows.loc[41, "intent"] = " \t"
    rows.loc[99, "utterance"] = "x" * 2500
    rows.to_csv(path, index=False)
    return 5


def test_fault_injected_csv_is_quarantined_row_by_row(tmp_path: Path) -> None:
    source = tmp_path / "support.csv"
    bad = fault_injected(source)
    params = params_for(tmp_path, [{"kind": "file", "path": str(source), "text_column": "utterance",
                                    "label_column": "intent"}])
    assert ingest.run(params)["rows"] == 300
    summary = validate.run(params)
    assert {k: summary[k] for k in ("rows_in", "rows_kept", "rows_quarantined")} == {
        "rows_in": 300, "rows_kept": 300 - bad, "rows_quarantined": bad}
    quarantined = [json.loads(line) for line in (tmp_path / "quarantine.jsonl").read_text().splitlines()]
    by_row = {q["source_row"]: q for q in quarantined}
    assert set(by_row) == {5, 17, 40, 41, 99}
    assert by_row[5]["failed_checks"] == ["text_not_blank", "text_length"]
    assert by_row[5]["reasons"].startswith("text is empty")
    assert by_row[17]["failed_checks"] == ["text_not_blank"]
    assert by_row[40]["failed_checks"] == by_row[41]["failed_checks"] == ["label_not_blank", "label_known"]
    assert by_row[99]["failed_checks"] == ["text_length"] and "2000" in by_row[99]["reasons"]
    assert all(q["source"] == str(source) for q in quarantined)
    kept = pd.read_parquet(tmp_path / "rows.parquet")
    assert len(kept) + len(quarantined) == 300 and not set(kept["source_row"]) & set(by_row)


def test_too_many_bad_rows_fails_naming_checks_and_keeps_the_quarantine(tmp_path: Path) -> None:
    source = tmp_path / "support.csv"
    fault_injected(source)
    params = params_for(tmp_path, [{"kind": "file", "path": str(source), "text_column": "utterance",
                                    "label_column": "intent"}], **{"validate.max_quarantine_share": 0.01})
    ingest.run(params)
    with pytest.raises(DataError, match=r"batch rejected: quarantined share 1.7% > .*5 of 300 rows.*quarantine"):
        validate.run(params)
    assert len((tmp_path / "quarantine.jsonl").read_text().splitlines()) == 5


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_jsonl_and_parquet_sources_keep_nulls_as_missing(tmp_path: Path, fmt: str) -> None:
    frame = pd.DataFrame({"body": ["card lost", None, "top up failed"], "y": ["a", "b", None]})
    path = tmp_path / f"rows.{fmt}"
    frame.to_json(path, orient="records", lines=True) if fmt == "jsonl" else frame.to_parquet(path)
    params = params_for(tmp_path, [{"kind": "file", "path": str(path), "text_column": "body", "label_column": "y"}],
                        **{"validate.max_quarantine_share": 1.0, "validate.min_examples_per_class": 1})
    ingest.run(params)
    summary = validate.run(params)
    assert (summary["rows_in"], summary["rows_kept"], summary["rows_quarantined"]) == (3, 1, 2)
    reasons = {json.loads(x)["source_row"]: json.loads(x)["reasons"]
               for x in (tmp_path / "quarantine.jsonl").read_text().splitlines()}
    assert reasons == {1: "text is missing", 2: "label is missing"}


def test_glob_of_files_and_demo_combine_in_a_stable_order(tmp_path: Path) -> None:
    for i in range(2):
        pd.DataFrame({"text": [f"text {i}"], "label": ["x"]}).to_csv(tmp_path / f"part{i}.csv", index=False)
    params = params_for(tmp_path, [{"kind": "demo", "rows": 100, "seed": 1},
                                   {"kind": "file", "path": str(tmp_path / "part*.csv")}],
                        **{"data.label_case": "lower"})
    ingest.run(params)
    first = (tmp_path / "raw.parquet").read_bytes()
    raw = pd.read_parquet(tmp_path / "raw.parquet")
    assert len(raw) == 102 and list(raw["text"].tail(2)) == ["text 0", "text 1"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [s["kind"] for s in manifest["sources"]] == ["demo", "file", "file"]
    ingest.run(params)
    assert (tmp_path / "raw.parquet").read_bytes() == first  # unchanged sources, identical snapshot


@pytest.mark.parametrize(("content", "message"), [
    (b"", "file is empty"),
    (b"utterance,intent\nhello,greet\n", "missing column(s) ['text', 'label']"),
    (b"text;label\nhello;greet\n", "looks semicolon-delimited: set delimiter: ';' for this source"),
    (b"text\tlabel\nhello\tgreet\n", "looks tab-delimited: set delimiter: '\\t' for this source"),
    (b"text,label\ncaf\xe9,drink\n", "not valid UTF-8 at byte offset"),
])
def test_bad_files_give_one_clear_error_naming_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    params = params_for(tmp_path, [{"kind": "file", "path": str(path)}])
    with pytest.raises(DataError) as error:
        ingest.run(params)
    assert str(path) in str(error.value) and message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_source_file_is_named(tmp_path: Path) -> None:
    params = params_for(tmp_path, [{"kind": "file", "path": str(tmp_path / "nope*.csv")}])
    with pytest.raises(DataError, match="no file matches"):
        ingest.run(params)


def test_metadata_columns_ride_along_to_the_splits_and_slice_the_metrics(tmp_path: Path) -> None:
    from gradus.config.pipeline import EvaluateConfig
    from gradus.stratify import split_by_label
    from tasks.evaluate import slice_report

    rows = pd.read_csv(BANKING77 / "train.csv").head(400)
    rows["channel"] = ["app" if i % 3 else "web" for i in range(len(rows))]
    rows.loc[7, "text"] = ""  # quarantined, and its channel goes with it
    rows.to_csv(tmp_path / "with_channel.csv", index=False)
    rows.drop(columns="channel").head(50).to_csv(tmp_path / "without.csv", index=False)
    params = params_for(tmp_path, [
        {"kind": "file", "path": str(tmp_path / "with_channel.csv"), "label_column": "category",
         "metadata_columns": ["channel"]},
        {"kind": "file", "path": str(tmp_path / "without.csv"), "label_column": "category"}],
        **{"validate.max_quarantine_share": 1.0, "validate.min_examples_per_class": 1})
    ingest.run(params)
    raw = pd.read_parquet(tmp_path / "raw.parquet")
    assert list(raw.columns) == ["text", "label", "source", "source_row", "text_type", "label_type", "channel"]
    assert raw["channel"].iloc[:400].tolist() == rows["channel"].tolist() and raw["channel"].iloc[400:].isna().all()
    validate.run(params)
    kept = pd.read_parquet(tmp_path / "rows.parquet")
    quarantined = [json.loads(line) for line in (tmp_path / "quarantine.jsonl").read_text().splitlines()]
    assert "channel" in kept.columns and any(q["channel"] == "app" and q["source_row"] == 7 for q in quarantined)
    test = kept[split_by_label(kept, params.split) == "test"].fillna({"channel": "none"})
    report = slice_report(test, list(test["label"]), sorted(kept["label"].unique()),
                          EvaluateConfig(slice_columns=("channel",)), "test.parquet")
    assert sum(s["rows"] for s in report["channel"].values()) == len(test) and {"app", "web"} <= set(report["channel"])
    with pytest.raises(DataError, match=r"without\.csv: missing column\(s\) \['channel'\]"):
        ingest.run(params_for(tmp_path, [{"kind": "file", "path": str(tmp_path / "without.csv"),
                                          "label_column": "category", "metadata_columns": ["channel"]}]))


def test_token_counts_read_from_tokenizer_json_equal_the_auto_tokenizers(tmp_path: Path) -> None:
    """The validate stage counts tokens with the fast tokenizer's engine read from tokenizer.json (no transformers
    import); its counts must be AutoTokenizer's, special tokens included and nothing truncated or padded."""
    from transformers import AutoTokenizer

    from gradus.modeling import resolve_base

    texts = [*pd.read_csv(BANKING77 / "test.csv")["text"].head(300),
             "", "   ", "card lost " * 200, "Café naïve coöperate", "e\u0301 combining", "👍🏽 thanks!!", "转账 失败",
             "ｆｕｌｌｗｉｄｔｈ", "tab\there\nnewline", "x" * 3000]
    base = resolve_base("packaged").location
    params = params_for(tmp_path, [{"kind": "demo"}], **{"model.base": base})
    counts = validate.tokenizer_counts(params)(texts)
    expected = [len(ids) for ids in AutoTokenizer.from_pretrained(base)(texts, truncation=False)["input_ids"]]
    assert counts == expected
    assert max(counts) == 402  # 400 words and the two special tokens: counted in full, not cut at the model's 128
