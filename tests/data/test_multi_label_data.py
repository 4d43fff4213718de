"""Label sets through ingest and validate (model.task multi_label) on real GoEmotions rows: each bad label set
quarantined with a reason naming the row's fault and the fix, rows in = kept + quarantined."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from gradus.errors import DataError
from tasks import ingest, validate
from tests.conftest import ROOT
from tests.helpers.data import params_for

GOEMOTIONS = ROOT / "benchmarks" / "data" / "goemotions"
LABELS = ["admiration", "amusement", "anger", "annoyance", "gratitude", "joy", "neutral"]
MULTI = "multi_label"


def base_rows(n: int = 400) -> pd.DataFrame:
    """GoEmotions training rows whose labels are all among LABELS, their label sets as lists."""
    rows = pd.read_csv(GOEMOTIONS / "train.csv")
    rows["labels"] = rows["labels"].str.split("|")
    rows = rows[rows["labels"].map(lambda labels: set(labels) <= set(LABELS))]
    return rows.drop_duplicates("text").head(n).reset_index(drop=True)


def write_jsonl(path: Path, frame: pd.DataFrame) -> Path:
    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def run_validate(tmp_path: Path, sources: list[dict], **extra: object) -> tuple[dict, dict, dict[str, dict]]:
    params = params_for(tmp_path, sources, **{"model.task": MULTI, "validate.max_quarantine_share": 1.0,
                                              "validate.label_noise.enabled": False, **extra})
    ingest.run(params)
    summary = validate.run(params)
    report = json.loads((tmp_path / "validation.json").read_text())
    quarantined = {}
    for line in (tmp_path / "quarantine.jsonl").read_text().splitlines():
        record = json.loads(line)
        quarantined[record["text"]] = record
    return summary, report, quarantined


def test_each_bad_label_set_is_quarantined_with_its_reason_and_nothing_is_lost(tmp_path: Path) -> None:
    base = base_rows()
    faults = pd.DataFrame([
        ("an unknown label here", ["joy", "curiosity"]),        # unknown label (allowed set)
        ("nothing applies to this one", []),                     # empty set, not allowed
        ("the separator inside", ["anger|joy"]),                # a label holding the separator
        ("a number as the label", 7),                            # not a label set at all
        ("no label cell at all", None),                          # missing: the empty set
        ("  Joy twice and gratitude ", ["joy", " joy", "gratitude"]),  # duplicates within a row: repaired, kept
        ("is this fixed", ["anger"]),                            # the same normalised text ...
        ("Is this fixed?", ["joy"]),                             # ... with another label set: a conflict
    ], columns=["text", "labels"])
    frame = pd.concat([base, faults], ignore_index=True)
    source = {"kind": "file", "path": str(write_jsonl(tmp_path / "rows.jsonl", frame)), "label_column": "labels"}
    summary, report, quarantined = run_validate(tmp_path, [source], **{"validate.allowed_labels": json.dumps(LABELS)})

    expected = {"an unknown label here": ("label_set", "unknown label(s) ['curiosity']: not in validate.allowed"),
                "nothing applies to this one": ("label_set", "set multi_label.allow_empty"),
                "the separator inside": ("label_set", "holds the label separator '|'"),
                "a number as the label": ("label_type", "neither a text nor a list of labels"),
                "no label cell at all": ("label_set", "empty label set"),
                "is this fixed": ("conflicting_labels", "other labels"),
                "Is this fixed?": ("conflicting_labels", "other labels")}
    for text, (check, words) in expected.items():
        assert text in quarantined, f"{text!r} was kept"
        assert check in quarantined[text]["failed_checks"] and words in quarantined[text]["reasons"], \
            quarantined[text]
    assert set(quarantined) == set(expected), sorted(set(quarantined) - set(expected))
    assert summary["rows_in"] == len(frame) == summary["rows_kept"] + summary["rows_quarantined"]
    assert report["label_duplicates_removed"] == 1
    kept = pd.read_parquet(tmp_path / "rows.parquet")
    repaired = kept[kept["text"] == "  Joy twice and gratitude "]["labels"].iloc[0]
    assert list(repaired) == ["gratitude", "joy"]
    assert report["classes"] == len(LABELS)


def test_a_csv_cell_is_split_by_the_separator_and_a_list_written_otherwise_is_named(tmp_path: Path) -> None:
    base = base_rows(200)
    cells = base.assign(labels=base["labels"].map("|".join))
    (tmp_path / "default").mkdir()
    piped = tmp_path / "default" / "rows.csv"
    pd.concat([cells, pd.DataFrame([("a list with commas", "anger,joy"), ("a JSON list as text", '["anger"]')],
                                   columns=["text", "labels"])]).to_csv(piped, index=False)
    summary, _, quarantined = run_validate(tmp_path / "default",
                                           [{"kind": "file", "path": str(piped), "label_column": "labels"}])
    assert set(quarantined) == {"a list with commas", "a JSON list as text"}
    assert "set label_separator: ',' on this source" in quarantined["a list with commas"]["reasons"]
    assert "JSON list as text" in quarantined["a JSON list as text"]["reasons"]
    kept = pd.read_parquet(tmp_path / "default" / "rows.parquet")
    assert sorted(kept["labels"].map(len).unique()) == sorted(base["labels"].map(len).unique())

    (tmp_path / "comma").mkdir()
    commas = tmp_path / "comma" / "rows.csv"
    base.assign(labels=base["labels"].map(",".join)).to_csv(commas, index=False)
    summary, _, quarantined = run_validate(tmp_path / "comma", [
        {"kind": "file", "path": str(commas), "label_column": "labels", "label_separator": ","}])
    assert not quarantined and summary["rows_kept"] == len(base)
    kept = pd.read_parquet(tmp_path / "comma" / "rows.parquet")
    assert [list(labels) for labels in kept["labels"]] == [sorted(labels) for labels in base["labels"]]


def test_cardinality_bounds_and_the_empty_set_follow_their_settings(tmp_path: Path) -> None:
    base = base_rows(200)
    frame = pd.concat([base, pd.DataFrame([("nothing applies", []), ("three at once", ["anger", "joy", "neutral"])],
                                          columns=["text", "labels"])], ignore_index=True)
    source = {"kind": "file", "path": str(write_jsonl(tmp_path / "rows.jsonl", frame)), "label_column": "labels"}
    _, _, quarantined = run_validate(tmp_path, [source], **{"multi_label.allow_empty": "true",
                                                           "multi_label.max_labels": 2})
    assert "nothing applies" not in quarantined
    assert "more than multi_label.max_labels=2" in quarantined["three at once"]["reasons"]


def test_a_label_too_rare_to_learn_fails_the_batch_when_allowed_and_quarantines_when_inferred(tmp_path: Path) -> None:
    base = base_rows(300)
    frame = pd.concat([base, pd.DataFrame([("so rare", ["anger", "grief"])], columns=["text", "labels"])],
                      ignore_index=True)
    source = {"kind": "file", "path": str(write_jsonl(tmp_path / "rows.jsonl", frame)), "label_column": "labels"}
    _, _, quarantined = run_validate(tmp_path / "inferred", [source])
    assert "fewer than validate.min_examples_per_class=5 rows hold them" in quarantined["so rare"]["reasons"]
    with pytest.raises(DataError, match=r"labels below validate.min_examples_per_class=5: \{'grief': 1\}"):
        run_validate(tmp_path / "allowed", [source], **{"validate.allowed_labels": json.dumps([*LABELS, "grief"])})


def test_label_set_noise_flags_a_set_with_the_change_suggested(tmp_path: Path) -> None:
    base = base_rows(400)
    wrong = base.index[base["labels"].map(lambda labels: labels == ["gratitude"])][:3]
    base.loc[wrong, "labels"] = pd.Series([["anger"]] * len(wrong), index=wrong)
    source = {"kind": "file", "path": str(write_jsonl(tmp_path / "rows.jsonl", base)), "label_column": "labels"}
    params = params_for(tmp_path, [source], **{"model.task": MULTI, "validate.max_quarantine_share": 1.0})
    ingest.run(params)
    summary = validate.run(params)
    flags = [json.loads(line) for line in (tmp_path / "flags.jsonl").read_text().splitlines()]
    noisy = [flag for flag in flags if flag["noise_flag"]]
    assert summary["flagged_rows"]["label_noise"] == len(noisy) >= 1
    assert all(flag["suggested_label"] for flag in noisy)
    assert any("+gratitude" in flag["suggested_label"] for flag in noisy
               if flag["text"] in set(base.loc[wrong, "text"])), noisy[:5]
