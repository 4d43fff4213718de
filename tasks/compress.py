"""Compress stage: ONNX variants of the candidate (same weights; int8 weights), each timed and checked for
parity with the PyTorch model on the test split. Only a variant that passes parity is registered (and so can
be served); the report says which failed and by how much."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradus import compression
from gradus.config.pipeline import CompressConfig, StageParams
from gradus.io import write_json
from gradus.modeling import bf16_pays, load_classifier
from gradus.task_types.seam import DEFAULT_TASK, task_type
from tasks.evaluate import score

TIMED_TEXTS = 512  # test texts each backend is timed on (a prefix: the same texts for every backend)


def parity(reference: list[Any], predicted: list[Any], actual: list[Any], labels: list[str],
           cfg: CompressConfig, task: str = DEFAULT_TASK) -> dict[str, Any]:
    """A variant's agreement with the PyTorch model (the share of texts answered exactly alike, as the task type
    compares answers: the same label; the same label set) and the drop of its headline test figure (accuracy; for
    label sets micro-F1) against the reference's."""
    kind = task_type(task)
    key = kind.headline_metric
    ref, var = score(actual, reference, labels, task), score(actual, predicted, labels, task)
    agreement = float(np.mean(kind.agreement(reference, predicted) >= 1.0)) if actual else 1.0
    drop = ref[key] - var[key]
    name = "top-1 agreement" if key == "accuracy" else "exact agreement"
    reasons = []
    if agreement < cfg.min_agreement:
        reasons.append(f"{name} {agreement:.4f} with the PyTorch model is {cfg.min_agreement - agreement:.4f} "
                       f"below compress.min_agreement {cfg.min_agreement}")
    if drop > cfg.max_accuracy_drop:
        reasons.append(f"test {key.replace('_', '-')} {var[key]:.4f} is {drop:.4f} below the PyTorch model's "
                       f"{ref[key]:.4f} (compress.max_accuracy_drop {cfg.max_accuracy_drop})")
    return {"agreement": round(agreement, 6), key: var[key], "macro_f1": var.get("macro_f1"),
            f"{key}_drop": round(drop, 6), "passed": not reasons, "reasons": reasons}


def build_variant(variant: str, model_dir: Path, out: Path, settings: dict[str, Any]) -> Path:
    """Write one variant's graph under out/<variant>/ (int8 is quantized from the fp32 export)."""
    onnx_graph = out / compression.variant_file("onnx")
    if not onnx_graph.is_file():
        compression.export_onnx(model_dir, onnx_graph)
    if variant == "onnx":
        return onnx_graph
    return compression.quantize_int8(onnx_graph, out / compression.variant_file(variant), settings)


def compress(model_dir: Path, test: pd.DataFrame, out: Path, cfg: CompressConfig, max_length: int,
             batch_size: int, task: str = DEFAULT_TASK) -> dict[str, Any]:
    """Export, quantize, time and check every configured variant of the model in model_dir."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if not cfg.enabled:
        return {"enabled": False, "variants": {}}
    # Parity is judged against the model's own fp32 answers on the CPU (where the variants run); speed
    # against the torch backend as it serves (bf16 autocast where that pays on this CPU).
    reference = load_classifier(model_dir, "cpu", max_length=max_length, bf16=False)
    labels, texts, actual = list(reference.labels), list(test["text"]), task_type(task).targets(test)
    expected = reference.predict(texts, batch_size).answers()
    timed = texts[:TIMED_TEXTS] or compression.SAMPLE_TEXTS
    served = dataclasses.replace(reference, bf16=bf16_pays("cpu"))
    speed = compression.texts_per_second(served, timed, cfg.timing_batch_size, cfg.timing_seconds)
    settings = compression.int8_settings()
    report: dict[str, Any] = {
        "enabled": True, "test_rows": len(test), "int8_settings": settings,
        "reference": {"backend": "torch", "bf16": served.bf16, "texts_per_s": round(speed, 1),
                      **{k: v for k, v in score(actual, expected, labels, task).items() if k != "per_class"}},
        "variants": {}}
    for variant in cfg.variants:
        graph = build_variant(variant, model_dir, out, settings)
        model = compression.load_onnx(graph, model_dir, variant, max_length=max_length)
        result = parity(expected, model.predict(texts, batch_size).answers(), actual, labels, cfg, task)
        variant_speed = compression.texts_per_second(model, timed, cfg.timing_batch_size, cfg.timing_seconds)
        report["variants"][variant] = {
            "file": compression.variant_file(variant), "bytes": graph.stat().st_size,
            "texts_per_s": round(variant_speed, 1), "speedup": round(variant_speed / speed, 3), **result}
    return report


def run(params: StageParams) -> dict[str, Any]:
    """Write paths.compressed (the graphs) and paths.compression_report (speed and parity per variant)."""
    paths = params.paths
    test = pd.read_parquet(Path(paths.splits) / "test.parquet")
    report = compress(Path(paths.model), test, Path(paths.compressed), params.compress, params.train.max_length,
                      params.evaluate.batch_size, params.model.task)
    write_json(report, Path(paths.compression_report))
    drop = f"{task_type(params.model.task).headline_metric}_drop"
    return {name: {k: item[k] for k in ("passed", "agreement", drop, "speedup")}
            for name, item in report["variants"].items()}
