"""Compressed variants and ensembles: a real ONNX export and int8 quantization of the tiny classifier, the parity
gate (a perturbed variant is refused), the service answering from each backend, and soft voting."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import numpy_helper

from gradus import compression
from gradus.compression import passed_variants
from gradus.config.params import load_params
from gradus.config.pipeline import CompressConfig
from gradus.ensemble import build_ensemble
from gradus.errors import ConfigError, ModelError
from gradus.modeling import load_classifier, save_label_map
from gradus.servable import load_version
from tasks.compress import compress, parity
from tests.conftest import ROOT
from tests.helpers.registry import lineage
from tests.serving.conftest import Project, classifier_variant, start_service, stop_service

TEXTS = ["where is my card", "I would like a refund for the order", "what is my balance today?",
         "my card was stolen yesterday", "refund please", "how much money do I have"]


@pytest.fixture(scope="module")
def confident_dir(tmp_path_factory: pytest.TempPathFactory, tiny_classifier_dir: Path) -> Path:
    """The tiny classifier with large random weights: confident, varied answers (parity is then meaningful)."""
    return classifier_variant(tiny_classifier_dir, tmp_path_factory.mktemp("confident") / "model", seed=2)


@pytest.fixture(scope="module")
def compressed(tmp_path_factory: pytest.TempPathFactory, confident_dir: Path) -> tuple[Path, dict]:
    model = load_classifier(confident_dir, bf16=False)
    texts = TEXTS * 20
    test = pd.DataFrame({"text": texts, "label": model.predict(texts).labels()})  # torch fp32 is always right
    out = tmp_path_factory.mktemp("compressed")
    return out, compress(confident_dir, test, out, CompressConfig(timing_seconds=0.2), max_length=32, batch_size=16)


def test_export_and_quantize_keep_the_answers_within_parity(compressed: tuple[Path, dict], confident_dir: Path) -> None:
    out, report = compressed
    onnx_v, int8 = report["variants"]["onnx"], report["variants"]["onnx-int8"]
    assert report["reference"]["accuracy"] == 1.0 and report["int8_settings"]["per_channel"]
    assert onnx_v["passed"] and onnx_v["agreement"] == 1.0 and onnx_v["accuracy_drop"] == 0.0
    assert int8["bytes"] < onnx_v["bytes"] / 2  # int8 weights: a quarter of fp32 for the matrices
    torch_probs = load_classifier(confident_dir, bf16=False).predict(TEXTS).probabilities
    fp32 = compression.load_onnx(out / onnx_v["file"], confident_dir, "onnx", max_length=32).predict(TEXTS)
    np.testing.assert_allclose(fp32.probabilities, torch_probs, atol=1e-4)
    quantized = compression.load_onnx(out / int8["file"], confident_dir, "onnx-int8", max_length=32).predict(TEXTS)
    assert np.abs(quantized.probabilities - torch_probs).max() < 0.1
    assert set(passed_variants(report, out)) == {v["file"] for v in report["variants"].values() if v["passed"]}


def test_a_variant_with_perturbed_weights_is_refused_by_the_gate(compressed: tuple[Path, dict], confident_dir: Path,
                                                                tmp_path: Path) -> None:
    out, _ = compressed
    graph = onnx.load(str(out / "onnx" / "model.onnx"))
    rng = np.random.default_rng(0)
    for initializer in graph.graph.initializer:
        weights = numpy_helper.to_array(initializer)
        if weights.dtype == np.float32 and weights.ndim == 2:
            noisy = weights + rng.normal(0, 3 * weights.std(), weights.shape).astype(np.float32)
            initializer.CopyFrom(numpy_helper.from_array(noisy, initializer.name))
    broken = tmp_path / "onnx" / "model.onnx"
    broken.parent.mkdir()
    onnx.save(graph, str(broken))
    reference = load_classifier(confident_dir, bf16=False)
    texts = TEXTS * 20
    expected = reference.predict(texts).labels()
    answers = compression.load_onnx(broken, confident_dir, "onnx", max_length=32).predict(texts).labels()
    verdict = parity(expected, answers, expected, list(reference.labels), CompressConfig())
    assert not verdict["passed"] and verdict["agreement"] < 0.99
    assert any("below compress.min_agreement 0.99" in reason for reason in verdict["reasons"]), verdict
    report = {"variants": {"onnx": {"file": "onnx/model.onnx", **verdict}}}
    assert passed_variants(report, tmp_path) == {}  # nothing of it would be registered


def test_the_service_answers_from_each_backend_alike(tmp_path: Path, project: Project, confident_dir: Path,
                                                     compressed: tuple[Path, dict]) -> None:
    out, report = compressed
    registry = project.registry()
    manifest, _ = registry.register(confident_dir, lineage("compressed"), {"accuracy": 1.0, "compression": report},
                                    {"passed": True, "reasons": []}, run="test",
                                    extra_files=passed_variants(report, out))
    version = manifest["version"]
    assert {"onnx/model.onnx", "onnx-int8/model.onnx"} <= set(manifest["files"])
    assert not registry.verify(version)
    registry.promote(version, run="test", reason="compressed champion")
    torch_probs = load_version(registry, version, bf16=False).predict(TEXTS).probabilities
    for backend in ("onnx", "onnx-int8"):
        loaded = load_version(registry, version, backend=backend)
        assert loaded.backend == backend
        assert np.abs(loaded.predict(TEXTS).probabilities - torch_probs).max() < 0.1, backend
    assert load_version(registry, version, backend="auto").backend in compression.BACKENDS
    with pytest.raises(ModelError, match="no onnx-int8 variant that passed parity"):
        load_version(registry, project.versions[0], backend="onnx-int8")

    project.set(serving__backend="onnx-int8")
    service = start_service(project)
    try:
        assert service.metric("gradus_model_info", alias="champion", version=version, backend="onnx-int8") == 1
        answer = service.client.post("/v1/predict", json={"texts": TEXTS}).json()
        assert answer["model"]["version"] == version
        expected_labels = load_version(registry, version, backend="onnx-int8").predict(TEXTS).labels()
        assert [p["label"] for p in answer["predictions"]] == expected_labels
        served = [p["confidence"] for p in answer["predictions"]]
        np.testing.assert_allclose(served, torch_probs.max(axis=1), atol=0.1)
    finally:
        stop_service(service)


def test_an_ensemble_answers_with_the_weighted_mean_of_its_members(project: Project) -> None:
    registry = project.registry()
    first, second = project.versions[1], project.versions[2]
    # Loaded as the service loads them (bf16 where it pays on this machine, as every batch is then run)
    members = [load_version(registry, v).predict(TEXTS[:1]).probabilities[0] for v in (first, second)]
    assert members[0].argmax() != members[1].argmax() or not np.allclose(members[0], members[1])
    expected = (3 * members[0] + members[1]) / 4
    project.set(serving__ensemble=[{"model": "champion", "weight": 3}, {"model": second, "weight": 1}])
    service = start_service(project)
    try:
        answer = service.client.post("/v1/predict", json={"texts": TEXTS[:1]}).json()
        assert answer["model"]["version"].startswith("ens-")
        scores = {s["label"]: s["score"] for s in answer["predictions"][0]["top_k"]}
        labels = load_version(registry, first).labels
        np.testing.assert_allclose([scores[label] for label in labels], expected, atol=1e-4)
        assert service.metric("gradus_model_info", alias="champion", backend="ensemble(torch+torch)") == 1
    finally:
        stop_service(service)


def test_an_ensemble_of_different_label_sets_is_refused_naming_the_labels(tiny_classifier_dir: Path,
                                                                         tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(tiny_classifier_dir, other)
    save_label_map(other, ["balance", "card_lost", "transfer"])
    models = [load_classifier(tiny_classifier_dir, version="va"), load_classifier(other, version="vb")]
    with pytest.raises(ModelError, match=r"vb lacks \['refund'\] and has \['transfer'\] that va lacks"):
        build_ensemble(models, [1.0, 1.0])


def test_int8_settings_follow_the_cpu_and_a_one_member_ensemble_is_a_config_error() -> None:
    assert compression.int8_settings({"avx2", "avx512f"})["reduce_range"]  # no VNNI: 7-bit weights
    assert not compression.int8_settings({"avx2", "avx512_vnni"})["reduce_range"]
    assert not compression.int8_settings({"amx_int8"})["reduce_range"]
    with pytest.raises(ConfigError, match=r"serving\.ensemble"):
        load_params(ROOT / "params.yaml", ["serving.ensemble=[{model: champion}]"])
