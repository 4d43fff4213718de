"""The frozen-encoder probe: the base model's own pooling, normalised embeddings, and the regularisation that
scores best on the validation split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gradus.demo import generate
from gradus.modeling import resolve_base
from gradus.probe import C_GRID, embed, fit_head, pooling_mode, probe_baseline


def test_the_pooling_is_the_one_the_base_model_was_trained_with(tmp_path: Path) -> None:
    assert pooling_mode(Path(resolve_base("packaged").location)) == "mean"  # all-MiniLM-L6-v2: mean pooling
    assert pooling_mode(tmp_path) == "mean"  # no sentence-transformers config: mean
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    assert pooling_mode(tmp_path) == "cls"


def test_embeddings_are_normalised_rows_in_input_order(tiny_model_dir: Path) -> None:
    texts = ["a card", "where is my refund for the order", "hi"]
    vectors = embed(str(tiny_model_dir), texts, 32, 2, "cpu", "mean")
    assert vectors.shape == (3, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    alone = embed(str(tiny_model_dir), texts[1:2], 32, 2, "cpu", "mean")
    np.testing.assert_allclose(vectors[1], alone[0], atol=1e-5)  # batching and length sorting change nothing
    assert not np.allclose(embed(str(tiny_model_dir), texts, 32, 2, "cpu", "cls"), vectors)


def test_the_regularisation_kept_is_the_one_best_on_the_validation_split() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 16))
    y = rng.integers(0, 4, 600)
    x = centers[y] + rng.normal(scale=2.0, size=(600, 16))
    labels = [f"l{i}" for i in y]
    model, c, val_accuracy = fit_head(x[:400], labels[:400], x[400:], labels[400:])
    assert float(np.mean(model.predict(x[400:]) == np.asarray(labels[400:]))) == val_accuracy  # the C it kept
    scores = {g: float(np.mean(LogisticRegression(C=g, max_iter=3000, random_state=0).fit(x[:400], labels[:400])
                               .predict(x[400:]) == np.asarray(labels[400:]))) for g in C_GRID}
    assert c in C_GRID and val_accuracy == pytest.approx(max(scores.values()))
    assert c == min(g for g, s in scores.items() if s == max(scores.values()))  # ties: the smaller C
    assert val_accuracy > 0.5  # learnable: well above the 0.25 of chance


def test_the_probe_baseline_scores_the_test_split_and_says_what_it_cost(tiny_model_dir: Path) -> None:
    data = generate(600, 1).dropna(subset=["text", "label"])
    data = data[data["text"].str.strip() != ""].drop_duplicates("text").reset_index(drop=True)
    train, val, test = data.iloc[:400], data.iloc[400:480], data.iloc[480:]
    first = probe_baseline(str(tiny_model_dir), None, train, val, test, 32, 64, "cpu")
    again = probe_baseline(str(tiny_model_dir), None, train, val, test, 32, 64, "cpu")
    assert {k: v for k, v in first.items() if "seconds" not in k} == {k: v for k, v in again.items()
                                                                     if "seconds" not in k}
    assert 0 < first["macro_f1"] <= 1 and first["val_accuracy"] > 0 and first["pooling"] == "mean"
    majority = test["label"].value_counts(normalize=True).iloc[0]
    assert first["accuracy"] > majority  # even a random tiny encoder's features carry the words
    assert first["seconds"] >= first["embedding_seconds"] > 0 and first["C"] in C_GRID


def test_the_console_says_plainly_whether_fine_tuning_beat_the_probe() -> None:
    from gradus.reports import training_lines

    probe = {"C": 4.0, "val_macro_f1": 0.91}
    lost = training_lines({"method": "auto", "probe": probe, "finetuned_val_macro_f1": 0.90,
                           "finetuning_beat_probe": False, "chosen": "probe"})
    assert len(lost) == 1 and "did NOT beat the frozen-encoder probe" in lost[0] and "auto kept the probe" in lost[0]
    assert "0.9000" in lost[0] and "0.9100" in lost[0]
    won = training_lines({"method": "lp_ft", "probe": probe, "finetuned_val_macro_f1": 0.93,
                          "finetuning_beat_probe": True, "chosen": "finetune"})
    assert "fine-tuning paid" in won[0] and "NOT" not in won[0] and "auto" not in won[0]
    alone = training_lines({"method": "probe", "probe": probe, "chosen": "probe"})
    assert "nothing fine-tuned" in alone[0] and "C 4" in alone[0]
    assert training_lines({"method": "finetune"}) == []  # no probe fitted in training: nothing to compare
