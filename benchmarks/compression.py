"""Serving backends side by side in one run: torch (the baseline; bf16 autocast where it pays, and fp32),
ONNX Runtime fp32 and int8, and a soft-voting ensemble of two versions, on Banking77 (77 intents).

    python -m benchmarks.compression [--quick]

1. Fine-tunes the packaged MiniLM on Banking77 train twice (seeds 1 and 2) through the train stage's code
   (params.yaml's defaults, as benchmarks/accuracy.py measures them; --quick: 1 epoch each).
2. Runs the compress stage's code on the first model: ONNX export, int8 quantization, parity on the 3,080
   test texts (agreement with the PyTorch model, accuracy), raw texts/s of each backend in batches of 32.
3. Registers both models in a scratch registry (the first with every variant, so each can be timed) and, per
   backend, starts `gradus serve --set serving.backend=...` on loopback and measures req/s with 32 requests
   in flight (one text per request) and the p99 latency.
4. Scores the ensemble of the two models (equal weights) against each member on the test split.
Writes benchmarks/results/compression.json.
Targets (2 cores): onnx-int8 >= 2x the torch backend's service req/s, accuracy within 0.5 points.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from benchmarks.accuracy import hold_out_val, read_split
from benchmarks.serve_throughput import closed_loop, run, start, stop
from cli.processes import free_port
from gradus.compression import texts_per_second
from gradus.config.params import load_params
from gradus.config.pipeline import CompressConfig
from gradus.ensemble import build_ensemble
from gradus.modeling import load_classifier
from gradus.registry.versions import open_registry
from tasks.compress import TIMED_TEXTS, compress
from tasks.evaluate import score
from tasks.train import fine_tune

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "compression.json"
# The defaults of params.yaml (the training recipe, as benchmarks/accuracy.py measures it); --quick: 1 epoch.
EPOCHS = "auto"
BACKENDS = ("torch", "torch:fp32", "onnx", "onnx-int8")  # torch:fp32 = the torch backend without bf16 autocast


def train_two(work: Path, epochs: float | str) -> tuple[list[Path], Any, pd.DataFrame]:
    """Two Banking77 models (seeds 1 and 2) with the defaults; the params and test split."""
    (train, _), (test, _) = read_split("banking77", "train"), read_split("banking77", "test")
    fit, val = hold_out_val(train)  # the rows benchmarks/accuracy.py trains and selects on
    folders, params = [], None
    for seed in (1, 2):
        overrides = [f"train.seed={seed}", f"paths.checkpoints={work}/checkpoints-{seed}",
                     f"paths.training_log={work}/log-{seed}", f"train.epochs={epochs}"]
        params = load_params(ROOT / "params.yaml", overrides)
        started = time.perf_counter()
        fine_tune(params, fit, val, work / f"model-{seed}")
        print(f"trained model {seed} in {time.perf_counter() - started:.0f} s", flush=True)
        folders.append(work / f"model-{seed}")
    return folders, params, test


def project(work: Path, models: list[Path], report: dict[str, Any], compressed: Path, max_length: int) -> Path:
    """A project whose registry holds both models (the first, with its passing variants, as champion)."""
    root = work / "project"
    root.mkdir()
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["serving"] |= {"prediction_log": {**raw["serving"]["prediction_log"], "uri": str(root / "predictions")},
                       "feedback": str(root / "feedback"), "shutdown_delay_s": 0}
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    registry = open_registry(str(root / "registry"), cache=root / "cache")
    versions = []
    for number, folder in enumerate(models):
        lineage = {"params": {"train": {"max_length": max_length}}, "base_model": {"name": "packaged"},
                   "benchmark": f"compression-{number}"}
        # Every variant, whatever its parity: the benchmark measures the speed of each (the report says which
        # passed); the pipeline's register step adds only the passing ones.
        extra = {v["file"]: compressed / v["file"] for v in report["variants"].values()} if number == 0 else {}
        manifest, _ = registry.register(folder, lineage, {"compression": report} if number == 0 else {},
                                        {"passed": True, "reasons": []}, run="benchmark", extra_files=extra)
        versions.append(manifest["version"])
    registry.promote(versions[0], run="benchmark", reason="compression benchmark")
    return root


def serve(root: Path, backend: str, texts: list[str], seconds: float) -> dict[str, Any]:
    """`gradus serve` with one backend: req/s at 32 in flight and p99, after a warm-up."""
    port = free_port()
    name, _, precision = backend.partition(":")
    process = start(["gradus", "serve", "--port", str(port), "--params", str(root / "params.yaml"),
                     "--set", f"serving.backend={name}", "--set", f"serving.precision={precision or 'auto'}"],
                    port, root, root / f"serve-{name}-{precision}.log")
    try:
        url = f"http://127.0.0.1:{port}/v1/predict"
        run(closed_loop(url, texts, min(seconds, 3)))
        result = run(closed_loop(url, texts, seconds))
    finally:
        stop(process)
    print(backend, json.dumps(result), flush=True)
    return result


def ensemble_scores(models: list[Path], test: pd.DataFrame, max_length: int) -> dict[str, Any]:
    """Accuracy and macro-F1 of each member and of their equal-weight soft vote."""
    loaded = [load_classifier(folder, max_length=max_length, version=f"model-{n + 1}") for n, folder in
              enumerate(models)]
    texts, actual = list(test["text"]), list(test["label"])
    out = {}
    for name, model in [("model-1", loaded[0]), ("model-2", loaded[1]),
                        ("ensemble", build_ensemble(loaded, [1.0, 1.0]))]:
        result = score(actual, model.predict(texts, 128).labels(), list(model.labels))
        out[name] = {"accuracy": result["accuracy"], "macro_f1": result["macro_f1"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 training epoch per model and 5-second phases")
    args = parser.parse_args()
    seconds = 5.0 if args.quick else 15.0
    with tempfile.TemporaryDirectory(prefix="gradus-compress-bench-") as scratch:
        work = Path(scratch)
        models, params, test = train_two(work, 1.0 if args.quick else EPOCHS)
        max_length = params.train.max_length
        compressed = work / "compressed"
        report = compress(models[0], test, compressed, CompressConfig(timing_seconds=seconds), max_length, 128)
        root = project(work, models, report, compressed, max_length)
        texts = test["text"].sample(frac=1.0, random_state=0).tolist()
        fp32 = load_classifier(models[0], "cpu", max_length=max_length, bf16=False)
        fp32_speed = texts_per_second(fp32, list(test["text"])[:TIMED_TEXTS], 32, seconds)
        services = {backend: serve(root, backend, texts, seconds) for backend in BACKENDS}
        ensemble = ensemble_scores(models, test, max_length)
    reference = report["reference"]
    backends: dict[str, Any] = {
        "torch": {"raw_texts_per_s": reference["texts_per_s"], "bf16": reference["bf16"],
                  "accuracy": reference["accuracy"], "agreement": 1.0},
        "torch:fp32": {"raw_texts_per_s": round(fp32_speed, 1), "bf16": False, "accuracy": reference["accuracy"],
                       "agreement": 1.0}}
    for name, variant in report["variants"].items():
        backends[name] = {"raw_texts_per_s": variant["texts_per_s"], "accuracy": variant["accuracy"],
                          "agreement": variant["agreement"], "parity_passed": variant["passed"],
                          "size_mb": round(variant["bytes"] / 1e6, 1)}
    for name, result in services.items():
        backends[name] |= {"service_req_per_s_c32": result["req_per_s"], "service_p99_ms": result["p99_ms"],
                           "service_errors": result["errors"],
                           "service_vs_raw": round(result["req_per_s"] / backends[name]["raw_texts_per_s"], 3)}
    int8 = backends["onnx-int8"]
    speedup = round(int8["service_req_per_s_c32"] / backends["torch"]["service_req_per_s_c32"], 3)
    versus_fp32 = {kind: round(int8[key] / backends["torch:fp32"][key], 3)
                   for kind, key in (("raw", "raw_texts_per_s"), ("service", "service_req_per_s_c32"))}
    drop = round(reference["accuracy"] - int8["accuracy"], 6)
    output = {
        "benchmark": "compression", "quick": args.quick, "dataset": "banking77", "test_rows": len(test),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "int8_settings": report["int8_settings"], "backends": backends,
        "onnx_int8_vs_torch_service": speedup, "onnx_int8_vs_torch_fp32": versus_fp32,
        "onnx_int8_accuracy_drop": drop,
        "ensemble": ensemble, "parity": report,
        "target": "onnx-int8 service req/s >= 2x torch, accuracy drop <= 0.005",
        "target_met": speedup >= 2.0 and drop <= 0.005,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(output, indent=2) + "\n")
    print(json.dumps({k: v for k, v in output.items() if k != "parity"}, indent=2))


if __name__ == "__main__":
    main()
