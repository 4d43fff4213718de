"""Drift monitor pieces: the retrain decision, OOV against the training vocabulary, batch loading, and the
Evidently text report on same-distribution and shifted text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradus.config.operations import DriftConfig
from gradus.config.params import load_params
from gradus.demo import generate
from gradus.errors import DataError
from gradus.monitoring.drift import decide, fingerprint, load_batch, oov_share, text_report, vocabulary
from tests.conftest import ROOT

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


def _signals(*drifted: str) -> dict:
    """What a one-label champion's monitor measures: every default signal but label sets' and entities' own."""
    return {name: {"drifted": name in drifted} for name in DriftConfig().signals
            if name not in ("label_cardinality", "label_scores", "entity_count", "span_score")}


def test_retrain_needs_drift_rows_cooldown_and_a_new_batch() -> None:
    cfg = DriftConfig(min_drifted_signals=2, min_samples=500, cooldown_hours=24)
    yes = decide(_signals("text_length", "embeddings"), 800, cfg, NOW - timedelta(hours=30), False, NOW)
    assert yes["retrain"] and yes["drifted_signals"] == ["text_length", "embeddings"]
    one = decide(_signals("text_length"), 800, cfg, None, False, NOW)
    assert not one["retrain"] and "1 of 7 signals drifted (text_length)" in one["reasons"][0]
    small = decide(_signals("text_length", "oov_share"), 499, cfg, None, False, NOW)
    assert not small["retrain"] and small["reasons"] == ["batch has 499 rows; drift.min_samples=500"]
    hot = decide(_signals("text_length", "oov_share"), 800, cfg, NOW - timedelta(hours=2), False, NOW)
    assert not hot["retrain"] and "last retrain 2.0 h ago; drift.cooldown_hours=24" in hot["reasons"]
    seen = decide(_signals("text_length", "oov_share"), 800, cfg, None, True, NOW)
    assert not seen["retrain"] and seen["reasons"] == ["this batch already triggered a retrain"]


def test_oov_share_counts_words_the_training_data_never_had() -> None:
    vocab = vocabulary(pd.Series(["Where is my card?", "I lost my card"]))
    assert vocab == {"where", "is", "my", "card", "i", "lost"}
    shares = oov_share(pd.Series(["where is my card", "my parcel is late", "!!!"]), vocab)
    assert list(shares) == [0.0, 0.5, 0.0]


def test_batches_load_from_globs_and_name_a_missing_column(tmp_path: Path) -> None:
    generate(300, 3).to_csv(tmp_path / "a.csv", index=False)
    generate(300, 4).to_json(tmp_path / "b.jsonl", orient="records", lines=True)
    batch = load_batch(str(tmp_path / "*.*"), DriftConfig(), tmp_path)
    assert set(batch.columns) == {"text", "label"} and 580 <= len(batch) <= 600  # blank texts dropped
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "renamed.csv").write_bytes((tmp_path / "a.csv").read_bytes())
    assert fingerprint(load_batch(str(copy / "renamed.csv"), DriftConfig(), tmp_path)) == fingerprint(
        load_batch(str(tmp_path / "a.csv"), DriftConfig(), tmp_path))
    with pytest.raises(DataError, match=r"a\.csv: missing column\(s\) \['message'\].*drift\.text_column"):
        load_batch(str(tmp_path / "a.csv"), DriftConfig(text_column="message"), tmp_path)
    with pytest.raises(DataError, match="no file matches"):
        load_batch(str(tmp_path / "none-*.csv"), DriftConfig(), tmp_path)


def test_evidently_text_report_flags_a_shift_and_not_a_resample() -> None:
    reference = generate(3000, 1)["text"].dropna().reset_index(drop=True)
    non_empty = int((reference.str.len() > 0).sum())  # the empty demo rows are left out, not crashed on
    same = generate(1000, 2)["text"].dropna().reset_index(drop=True)
    shifted = pd.Series([f"ERROR 0x{i:04x}: connection reset by peer at /var/run/socket-{i}.sock (retry {i % 7})"
                         for i in range(1000)])
    _, calm = text_report(reference, same, DriftConfig())
    assert not any(s["drifted"] for s in calm.values()), calm
    _, moved = text_report(reference, shifted, DriftConfig())
    assert {name for name, s in moved.items() if s["drifted"]} >= {"non_letter_share", "oov_share"}, moved
    assert all(s["method"] == "ks" and s["rows"] == {"reference": non_empty, "current": 1000}
               for s in moved.values())


def test_catalogue_adds_each_location_once_and_ingest_reads_it(tmp_path: Path, monkeypatch) -> None:
    from gradus.catalogue import add_to_catalogue, read_catalogue
    from tasks.ingest import declared_sources

    monkeypatch.chdir(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    before = params.read_bytes()
    folder = tmp_path / "data" / "sources.d"
    written = add_to_catalogue(folder, ["data/incoming/new.jsonl", "s3://bucket/new/"], "text", "label",
                               "drift_monitor/run-1", "drift on batch new.jsonl")
    assert len(written) == 2
    assert add_to_catalogue(folder, ["data/incoming/new.jsonl"], "text", "label", "x", "again") == []
    assert add_to_catalogue(folder, ["data/other.csv"], "text", "label", "x", "y", known={"data/other.csv"}) == []
    entries = read_catalogue(folder)
    assert [(e.source.kind, e.location(), e.added_by) for e in entries] == [
        ("file", "data/incoming/new.jsonl", "drift_monitor/run-1"), ("s3", "s3://bucket/new/", "drift_monitor/run-1")]
    assert "Review and commit it" in written[0].read_text()
    declared = declared_sources(load_params(params))
    assert [where for where, _ in declared] == ["data.sources.0", *[f"data/sources.d/{f.name}" for f in written]]
    assert params.read_bytes() == before  # the catalogue never edits params.yaml


def test_a_broken_catalogue_entry_is_named_with_the_fix(tmp_path: Path) -> None:
    from gradus.catalogue import read_catalogue
    from gradus.errors import ConfigError

    (tmp_path / "20261206-bad.yaml").write_text("source: {kind: file}\n")
    with pytest.raises(ConfigError, match=r"20261206-bad.yaml: not a valid data catalogue entry .*path.*delete it"):
        read_catalogue(tmp_path)


def test_label_shift_permutation_test_is_calibrated_and_sees_removed_labels() -> None:
    from gradus.monitoring.drift import label_shift_p_value

    rng = np.random.default_rng(0)
    labels = [f"intent_{i}" for i in range(77)]
    weights = rng.dirichlet(np.ones(77) * 5)
    p_values = [label_shift_p_value(pd.Series(rng.choice(labels, 1000, p=weights)),
                                    pd.Series(rng.choice(labels, 1000, p=weights)), 200, seed)
                for seed in range(40)]
    assert sum(p < 0.05 for p in p_values) <= 6  # about 5 % false alarms at the 5 % level, not 100 %
    kept = weights.copy()
    kept[:10] = 0  # ten intents gone from the current batch
    shifted = label_shift_p_value(pd.Series(rng.choice(labels, 1000, p=weights)),
                                  pd.Series(rng.choice(labels, 1000, p=kept / kept.sum())), 200, 0)
    assert shifted < 0.01
