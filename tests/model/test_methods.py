"""train.method on a tiny real BERT: LP-FT starts from the probe's head, `probe` saves the probe as a servable
classifier (torch and ONNX), `auto` keeps the better of the two on the validation split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file

from gradus.config.params import load_params
from gradus.modeling import load_classifier
from gradus.probe import LinearHead, Probe, embed, fit_probe
from gradus.stratify import split_by_label
from tasks.train import fine_tune, method_fields
from tests.conftest import BANKING77, ROOT, tiny_params

pytestmark = pytest.mark.slow
INTENTS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed", "pin_blocked"]


@pytest.fixture(scope="module")
def splits(tiny_model_dir: Path) -> dict[str, pd.DataFrame]:
    rows = pd.read_csv(BANKING77 / "train.csv").rename(columns={"category": "label"})
    rows = rows[rows["label"].isin(INTENTS)].reset_index(drop=True)
    params = load_params(ROOT / "params.yaml", [f"{k}={v}" for k, v in tiny_params(tiny_model_dir).items()])
    split = split_by_label(rows, params.split)
    return {name: rows[split == name].reset_index(drop=True) for name in ("train", "val", "test")}


def params_for(work: Path, model_dir: Path, **values: object):
    overrides = {**tiny_params(model_dir), "paths.checkpoints": work / "checkpoints",
                 "paths.training_log": work / "log", **values}
    return load_params(ROOT / "params.yaml", [f"{k}={v}" for k, v in overrides.items()])


def the_probe(model_dir: Path, splits: dict[str, pd.DataFrame]) -> Probe:
    params = load_params(ROOT / "params.yaml", [f"{k}={v}" for k, v in tiny_params(model_dir).items()])
    return fit_probe(str(model_dir), splits["train"], splits["val"], params.train.max_length,
                     params.train.eval_batch_size, "cpu", params.train.seed)


def head(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    weights = load_file(folder / "model.safetensors")
    return weights["classifier.weight"], weights["classifier.bias"]


def test_the_probe_is_reproducible_with_a_fixed_seed(tiny_model_dir: Path, splits) -> None:
    first, again = the_probe(tiny_model_dir, splits), the_probe(tiny_model_dir, splits)
    np.testing.assert_array_equal(first.head.coef, again.head.coef)
    assert (first.C, first.val_accuracy, first.val_macro_f1) == (again.C, again.val_accuracy, again.val_macro_f1)


def test_lp_ft_starts_fine_tuning_from_the_probes_head(tmp_path: Path, tiny_model_dir: Path, splits) -> None:
    """One step at a negligible learning rate: the saved head is still the probe's, weight for weight; the
    same step from a new pooled head is nowhere near it."""
    probe = the_probe(tiny_model_dir, splits)
    common = {"train.max_steps": 1, "train.learning_rate": 1e-9, "train.epochs": 1}
    lp_ft = fine_tune(params_for(tmp_path / "a", tiny_model_dir, **common, **{"train.method": "lp_ft"}),
                      splits["train"], splits["val"], tmp_path / "lp_ft")
    assert lp_ft["method"] == "lp_ft" and lp_ft["steps"] == 1 and lp_ft["probe"]["C"] == probe.C
    weight, bias = head(tmp_path / "lp_ft")
    np.testing.assert_allclose(weight, probe.head.coef, atol=1e-5)
    np.testing.assert_allclose(bias, probe.head.intercept, atol=1e-5)
    fine_tune(params_for(tmp_path / "b", tiny_model_dir, **common, **{"train.head": "pooled"}),
              splits["train"], splits["val"], tmp_path / "pooled")
    other, _ = head(tmp_path / "pooled")
    assert other.shape == weight.shape and np.abs(other - probe.head.coef).max() > 0.1


def test_the_probe_method_saves_the_probe_as_a_classifier(tmp_path: Path, tiny_model_dir: Path, splits) -> None:
    """No fine-tuning: the saved model is the frozen encoder and the probe's regression, in safetensors; loaded as
    any model (torch and its ONNX export), its answers are the regression's on the probe's embeddings."""
    from gradus.compression import export_onnx, load_onnx

    params = params_for(tmp_path, tiny_model_dir, **{"train.method": "probe"})
    summary = fine_tune(params, splits["train"], splits["val"], tmp_path / "model")
    assert summary["chosen"] == "probe" and summary["steps"] == 0 and summary["epochs"] == 0
    probe = the_probe(tiny_model_dir, splits)
    assert summary["val_macro_f1"] == pytest.approx(probe.val_macro_f1, abs=1e-6)
    assert json.loads((tmp_path / "log" / "metrics.json").read_text())["eval"]["macro_f1"] == pytest.approx(
        probe.val_macro_f1, abs=1e-6)  # the stage's DVC training log exists whatever the method
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["model_type"] == "gradus_pooled" and config["pooling"] == probe.pooling and config["normalize"]
    assert not [p for p in (tmp_path / "model").iterdir() if p.suffix in (".bin", ".pt", ".pkl")]

    texts = list(splits["test"]["text"])
    expected = probe.head.model.predict_proba(embed(str(tiny_model_dir), texts, params.train.max_length, 64, "cpu",
                                              probe.pooling))
    loaded = load_classifier(tmp_path / "model", bf16=False)
    assert loaded.labels == tuple(sorted(INTENTS))
    np.testing.assert_allclose(loaded.predict(texts).probabilities, expected, atol=1e-4)
    graph = export_onnx(tmp_path / "model", tmp_path / "onnx" / "model.onnx")
    onnx = load_onnx(graph, tmp_path / "model", "onnx", max_length=params.train.max_length)
    np.testing.assert_allclose(onnx.predict(texts).probabilities, expected, atol=1e-3)


def test_auto_keeps_the_probe_when_fine_tuning_does_not_beat_it(tmp_path: Path, tiny_model_dir: Path,
                                                                 splits) -> None:
    """A fine-tuning cut to one step at a negligible rate learns nothing: `auto` saves the probe instead."""
    params = params_for(tmp_path, tiny_model_dir, **{"train.method": "auto", "train.max_steps": 1,
                                                      "train.learning_rate": 1e-9, "train.epochs": 1})
    summary = fine_tune(params, splits["train"], splits["val"], tmp_path / "model")
    probe = the_probe(tiny_model_dir, splits)
    assert summary["finetuned_val_macro_f1"] < probe.val_macro_f1 and not summary["finetuning_beat_probe"]
    assert summary["chosen"] == "probe" and summary["val_macro_f1"] == pytest.approx(probe.val_macro_f1, abs=1e-6)
    weight, _ = head(tmp_path / "model")
    np.testing.assert_allclose(weight, probe.head.coef, atol=1e-6)


@pytest.mark.parametrize(("method", "tuned", "probed", "chosen"), [
    ("auto", 0.90, 0.80, "finetune"), ("auto", 0.80, 0.80, "probe"), ("auto", 0.70, 0.80, "probe"),
    ("lp_ft", 0.70, 0.80, "finetune"), ("finetune", 0.70, 0.80, "finetune"), ("probe", 0.70, 0.80, "probe")])
def test_which_model_a_method_keeps(tiny_model_dir: Path, method: str, tuned: float, probed: float,
                                    chosen: str) -> None:
    params = load_params(ROOT / "params.yaml", [f"train.method={method}"])
    head = LinearHead(np.zeros((2, 4)), np.zeros(2), 4.0, {"accuracy": probed, "macro_f1": probed})
    probe = Probe(head, "mean", 1.0, 1.0, np.zeros((0, 4)))
    fields = method_fields(params, probe, {"val_macro_f1": tuned})
    assert fields["chosen"] == chosen and fields["probe_val_macro_f1"] == probed
    if method == "probe":  # nothing was fine-tuned: no comparison to report
        assert "finetuning_beat_probe" not in fields and "finetuned_val_macro_f1" not in fields
    else:
        assert fields["finetuning_beat_probe"] == (tuned > probed) and fields["finetuned_val_macro_f1"] == tuned
