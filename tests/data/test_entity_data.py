"""Entities through ingest and validate (model.task token_classification) on real HWU64-slots rows, from the three
shapes people hold them in (text + entities JSONL, tokens + BIO tags JSONL, CoNLL): each bad row quarantined with a
reason naming the span or token at fault and the fix, rows in = kept + quarantined, repairs counted."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest

from gradus.errors import DataError
from tasks import ingest, validate
from tests.conftest import ROOT
from tests.helpers.data import params_for

SLOTS = ROOT / "benchmarks" / "data" / "hwu64-slots"
TASK = "token_classification"
TYPES = ["date", "time", "place_name", "person"]


def base_rows(n: int = 300) -> list[dict]:
    """HWU64-slots training rows whose entities are all of TYPES (and at least one)."""
    rows = [json.loads(line) for line in (SLOTS / "train.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["entities"] and all(e["label"] in TYPES for e in r["entities"])]
    seen, out = set(), []
    for row in random.Random(0).sample(rows, len(rows)):  # every intent, not the first few
        if row["text"] not in seen:
            seen.add(row["text"])
            out.append({"text": row["text"], "entities": row["entities"]})
    return out[:n]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


def run_validate(tmp_path: Path, sources: list[dict], **extra: object) -> tuple[dict, dict[str, dict]]:
    params = params_for(tmp_path, sources, **{"model.task": TASK, "validate.max_quarantine_share": 1.0,
                                              "validate.label_noise.enabled": False, **extra})
    ingest.run(params)
    validate.run(params)
    report = json.loads((tmp_path / "validation.json").read_text())
    quarantined = {json.loads(line)["text"]: json.loads(line)
                   for line in (tmp_path / "quarantine.jsonl").read_text().splitlines()}
    return report, quarantined


def test_each_bad_entity_row_is_quarantined_with_its_reason_and_nothing_is_lost(tmp_path: Path) -> None:
    rows = base_rows()
    faults = [
        {"text": "wake me at seven", "entities": [{"start": 11, "end": 40, "label": "time"}]},       # outside
        {"text": "remind me tomorrow", "entities": [{"start": 10, "end": 10, "label": "date"}]},     # empty
        {"text": "call mum on friday", "entities": [{"start": 5, "end": 8, "text": "dad", "label": "person"}]},
        {"text": "meet anna in paris", "entities": [{"start": 5, "end": 18, "label": "person"},
                                                    {"start": 13, "end": 18, "label": "place_name"}]},  # overlap
        {"text": "play some jazz now", "entities": [{"start": 10, "end": 14, "label": "genre"}]},    # unknown type
        {"text": "what is on today", "entities": "today"},                                          # not a list
        {"text": "set an alarm", "entities": None},                                                # no cell
        {"text": "weather in rome", "entities": [[11, 15, "place_name"]]},                         # doccano list: ok
    ]
    bio = [
        {"tokens": ["alarm", "at", "six", "am"], "tags": ["O", "O", "I-time", "I-time"]},   # IOB1: repaired
        {"tokens": ["email", "john", "smith"], "tags": ["O", "B-person"]},                   # lengths differ
        {"tokens": ["go", "to", "rome"], "tags": ["O", "O", "X-place_name"]},                # not a BIO tag
        {"tokens": ["in", "rome", "today"], "tags": ["O", "B-place_name", "B-date"]},        # fine
    ]
    conll = tmp_path / "extra.conll"
    conll.write_text("-DOCSTART- O\n\nwake O\nme O\nat O\nnoon B-time\n\nsee O\nanna B-person\n")
    sources = [{"kind": "file", "path": str(write_jsonl(tmp_path / "rows.jsonl", rows + faults)),
                "label_column": "entities"},
               {"kind": "file", "path": str(write_jsonl(tmp_path / "bio.jsonl", bio)), "tokens_column": "tokens",
                "tags_column": "tags"},
               {"kind": "file", "path": str(conll)}]
    report, quarantined = run_validate(tmp_path, sources, **{"validate.allowed_labels": json.dumps(TYPES)})

    expected = {
        "wake me at seven": "span time [11, 40) is outside the text (length 16)",
        "remind me tomorrow": "span date [10, 10) is empty",
        "call mum on friday": "says 'dad' but the text there is 'mum'",
        "meet anna in paris": "overlap (entities.overlaps: keep_longest",
        "play some jazz now": "entity type(s) ['genre'] not in validate.allowed_labels",
        "what is on today": "not a JSON list of entities",
        "set an alarm": "no entities cell: give [] for a text without entities",
        "email john smith": "3 tokens but 2 tags",
        "go to rome": "tags are O, B-<type> or I-<type>",
    }
    for text, words in expected.items():
        assert text in quarantined and words in quarantined[text]["reasons"], (text, quarantined.get(text))
    assert report["rows_in"] == len(rows) + len(faults) + len(bio) + 2
    assert report["rows_in"] == report["rows_kept"] + report["rows_quarantined"]
    assert report["rows_quarantined"] == len(expected) and report["bio_tags_repaired"] == 1
    kept = pd.read_parquet(tmp_path / "rows.parquet")
    by_text = {text: list(entities) for text, entities in zip(kept["text"], kept["entities"], strict=True)}
    assert [dict(e) for e in by_text["alarm at six am"]] == [{"start": 9, "end": 15, "type": "time"}]  # repaired
    assert [dict(e) for e in by_text["weather in rome"]] == [{"start": 11, "end": 15, "type": "place_name"}]
    assert [dict(e) for e in by_text["wake me at noon"]] == [{"start": 11, "end": 15, "type": "time"}]  # CoNLL
    assert [dict(e) for e in by_text["in rome today"]] == [{"start": 3, "end": 7, "type": "place_name"},
                                                           {"start": 8, "end": 13, "type": "date"}]


def test_policies_keep_the_longest_overlap_quarantine_invalid_bio_and_long_texts(tmp_path: Path) -> None:
    overlapping = {"text": "meet anna in paris", "entities": [{"start": 5, "end": 18, "label": "person"},
                                                                  {"start": 13, "end": 18, "label": "place_name"}]}
    long = {"text": "on friday " + "and then " * 30 + "in rome", "entities": [{"start": 3, "end": 9, "label": "date"}]}
    rows = [*base_rows(200), overlapping, long]
    bio = [{"tokens": ["alarm", "at", "six"], "tags": ["O", "O", "I-time"]}]
    sources = [{"kind": "file", "path": str(write_jsonl(tmp_path / "rows.jsonl", rows)), "label_column": "entities"},
               {"kind": "file", "path": str(write_jsonl(tmp_path / "bio.jsonl", bio)), "tokens_column": "tokens",
                "tags_column": "tags"}]
    report, quarantined = run_validate(tmp_path, sources, **{
        "entities.overlaps": "keep_longest", "entities.invalid_bio": "quarantine", "entities.long_texts": "quarantine",
        "train.max_length": 32})
    assert report["overlapping_spans_dropped"] == 1 and report["bio_tags_repaired"] == 0
    kept = pd.read_parquet(tmp_path / "rows.parquet")
    kept_spans = {t: [dict(e) for e in s] for t, s in zip(kept["text"], kept["entities"], strict=True)}
    assert kept_spans["meet anna in paris"] == [{"start": 5, "end": 18, "type": "person"}]
    assert "tagged I-time without a B-time" in quarantined["alarm at six"]["reasons"]
    long_text = rows[-1]["text"]
    assert "over train.max_length 32" in quarantined[long_text]["reasons"]
    assert "entities.long_texts: window" in quarantined[long_text]["reasons"]

    # The default (window) keeps the long text: it is read in strided windows at train and predict time.
    report, quarantined = run_validate(tmp_path / "window", sources, **{"train.max_length": 32})
    assert long_text not in quarantined and report["rows_in"] == report["rows_kept"] + report["rows_quarantined"]


def test_an_allowed_type_with_too_few_entities_fails_the_batch_naming_it(tmp_path: Path) -> None:
    rows = base_rows(200)
    source = {"kind": "file", "path": str(write_jsonl(tmp_path / "rows.jsonl", rows)), "label_column": "entities"}
    with pytest.raises(DataError, match=r"entity types below validate.min_examples_per_class=5: \{'weather_desc"):
        run_validate(tmp_path, [source], **{"validate.allowed_labels": json.dumps([*TYPES, "weather_descriptor"])})


def test_out_of_fold_tagger_flags_spans_it_strongly_disputes(tmp_path: Path) -> None:
    rows = base_rows(300)
    flipped = {}
    for row in rows[:300:25]:  # 12 rows: one entity's type swapped for another
        entity = row["entities"][0]
        other = next(t for t in ("date", "place_name") if t != entity["label"])
        flipped[row["text"]] = other
        entity["label"] = other
    source = {"kind": "file", "path": str(write_jsonl(tmp_path / "rows.jsonl", rows)), "label_column": "entities"}
    params = params_for(tmp_path, [source], **{"model.task": TASK, "validate.max_quarantine_share": 1.0})
    ingest.run(params)
    validate.run(params)
    flags = [json.loads(line) for line in (tmp_path / "flags.jsonl").read_text().splitlines()]
    flagged = {row["text"]: row["suggested_label"] for row in flags if row["noise_flag"]}
    caught = [text for text in flipped if text in flagged and f"-{flipped[text]} " in flagged[text]]
    assert len(caught) >= len(flipped) // 2, (len(caught), flagged)
    # Clean rows are mostly left alone (a cheap tagger on 300 texts disputes some real labels too: HWU's own
    # annotations are noisy; on the full train split it finds 88 % of flips at 21 % precision, docs/performance.md)
    assert len(set(flagged) - set(flipped)) <= len(rows) // 5
