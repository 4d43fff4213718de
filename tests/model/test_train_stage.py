"""Train stage on a tiny real BERT: what it writes, and that loading accepts safetensors only."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradus.config.params import load_params
from gradus.errors import ModelError
from gradus.modeling import DEFAULT_MAX_LENGTH, load_classifier, resolve_base
from gradus.stratify import split_by_label
from tasks.train import fine_tune
from tests.conftest import BANKING77, ROOT, tiny_params

pytestmark = pytest.mark.slow
INTENTS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed", "pin_blocked"]


def banking_subset() -> pd.DataFrame:
    rows = pd.read_csv(BANKING77 / "train.csv").rename(columns={"category": "label"})
    return rows[rows["label"].isin(INTENTS)].reset_index(drop=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, dict, pd.DataFrame]:
    work = tmp_path_factory.mktemp("train")
    overrides = [f"{k}={v}" for k, v in tiny_params(tiny_model_dir).items()]
    overrides += [f"paths.checkpoints={work / 'checkpoints'}", f"paths.training_log={work / 'log'}"]
    params = load_params(ROOT / "params.yaml", overrides)
    rows = banking_subset()
    split = split_by_label(rows, params.split)
    out = work / "model"
    summary = fine_tune(params, rows[split == "train"], rows[split == "val"], out)
    return out, summary, rows[split == "test"]


def test_writes_safetensors_tokenizer_and_label_map_only(trained) -> None:
    out, _, _ = trained
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "labels.json", "tokenizer.json"} <= names
    assert not {n for n in names if n.endswith((".bin", ".pt", ".pkl", ".ckpt"))}
    labels = json.loads((out / "labels.json").read_text())["labels"]
    assert labels == sorted(INTENTS)
    config = json.loads((out / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(len(labels))] == labels


def test_summary_names_base_model_revision_and_throughput(trained, tiny_model_dir: Path) -> None:
    _, summary, _ = trained
    assert summary["base_model_revision"] == resolve_base(str(tiny_model_dir)).revision
    assert summary["base_model_revision"].startswith("sha256:") and summary["device"] == "cpu"
    assert summary["samples_per_s"] > 0 and summary["tokens_per_s"] > summary["samples_per_s"]
    assert summary["steps"] > 0 and summary["train_loss"] < np.log(len(INTENTS))  # it learned something


def test_trained_model_beats_chance_on_held_out_banking77(trained) -> None:
    out, _, test = trained
    model = load_classifier(out)
    assert model.max_length == DEFAULT_MAX_LENGTH  # fine_tune alone writes no training summary to read it from
    probabilities = model.predict(list(test["text"]), batch_size=16).probabilities
    assert probabilities.shape == (len(test), len(model.labels))
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    accuracy = (np.array(model.labels)[probabilities.argmax(axis=1)] == test["label"].to_numpy()).mean()
    assert accuracy > 2.0 / len(model.labels), accuracy


class _Payload:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_weights_are_refused_without_being_executed(trained, tmp_path: Path) -> None:
    out, _, _ = trained
    unsafe = tmp_path / "unsafe"
    unsafe.mkdir()
    for name in ("config.json", "labels.json", "tokenizer.json", "tokenizer_config.json"):
        (unsafe / name).write_bytes((out / name).read_bytes())
    marker = tmp_path / "pwned"
    (unsafe / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ModelError, match="refusing pickle weights"):
        load_classifier(unsafe)
    (unsafe / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes())
    with pytest.raises(ModelError, match=r"pytorch_model\.bin"):
        load_classifier(unsafe)
    assert not marker.exists()
