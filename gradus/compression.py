"""Compressed variants of a classifier (ONNX, ONNX with int8 weights), their parity with the PyTorch model,
and the ONNX Runtime classifier that serves them with the same `predict` as a LoadedModel.

Export goes through `torch.onnx.export` and ONNX Runtime's own transformer optimizer (attention, GELU and
layer-norm fusion) and dynamic quantizer: the standard tools, no graph surgery of our own.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gradus.errors import ModelError
from gradus.modeling import (
    DEFAULT_MAX_LENGTH,
    Predictions,
    length_batches,
    load_decision,
    load_label_map,
    tokenize,
    training_summary,
    windowed,
)
from gradus.pooled import classes
from gradus.task_types.seam import DEFAULT_TASK, task_of_model, task_type

log = logging.getLogger("gradus.compression")
ONNX_FILE = "model.onnx"
VARIANTS = ("onnx", "onnx-int8")
BACKENDS = ("torch", *VARIANTS)
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Texts of mixed length for timing a backend on this machine (serving.backend=auto).
SAMPLE_TEXTS = ["where is my card", "I want to close my account and get a refund of the remaining balance",
                "how do I change my PIN?", "the transfer I made yesterday still has not arrived, what is going on",
                "top up failed", "can I use this card abroad when I travel to another country next month?"]


def variant_file(variant: str) -> str:
    """Where a variant's graph lives inside a model version's files."""
    return f"{variant}/{ONNX_FILE}"


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo is not there."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def int8_settings(flags: set[str] | None = None) -> dict[str, Any]:
    """Quantization settings for this CPU. Without VNNI (AVX2 or AVX-512 without it) int8 products saturate
    in 16 bits, so ONNX Runtime's guidance is 7-bit weights (reduce_range); with VNNI/AMX full 8 bits."""
    flags = cpu_flags() if flags is None else flags
    vnni = bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    return {"per_channel": True, "reduce_range": not vnni, "vnni": vnni, "amx": "amx_int8" in flags}


def export_onnx(model_dir: Path, target: Path) -> Path:
    """Export a fine-tuned classifier folder to an optimized ONNX graph (dynamic batch and sequence axes)."""
    import torch
    import transformers
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoConfig, AutoTokenizer

    from gradus.pooled import classes

    classes()  # the pooled classifier (gradus/pooled.py) exports like any other
    # Eager attention traces to plain MatMul/Softmax, the pattern ONNX Runtime fuses into its Attention op.
    kind = task_type(task_of_model(AutoConfig.from_pretrained(model_dir)))
    model = getattr(transformers, kind.auto_model).from_pretrained(model_dir, use_safetensors=True,
                                                                   attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    sample = tokenizer(SAMPLE_TEXTS[:2], padding=True, return_tensors="pt")
    names = [name for name in INPUTS if name in sample]
    target.parent.mkdir(parents=True, exist_ok=True)
    raw = target.with_suffix(".raw.onnx")
    # A token head's logits have a sequence axis too (windows x tokens x tags).
    axes = {name: {0: "batch", 1: "sequence"} for name in names} | {
        "logits": {0: "batch", 1: "sequence"} if kind.windowed else {0: "batch"}}
    # The tracer warns that shape checks become constants (the mask-padding branch) and about negative
    # indices; neither applies to these inputs, and the parity check compares every answer with torch's.
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(model, tuple(sample[name] for name in names), str(raw), input_names=names,
                          output_names=["logits"], dynamic_axes=axes, opset_version=17, dynamo=False)
    config = model.config
    optimized = optimize_model(str(raw), model_type="bert", num_heads=config.num_attention_heads,
                               hidden_size=config.hidden_size)
    optimized.save_model_to_file(str(target))
    raw.unlink()
    return target


def quantize_int8(source: Path, target: Path, settings: dict[str, Any]) -> Path:
    """Dynamic int8 quantization of the weights of every MatMul/Gemm (activations quantized at run time)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target.parent.mkdir(parents=True, exist_ok=True)
    # The fused graph holds contrib ops whose outputs shape inference cannot type: they are float.
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=settings["per_channel"],
                     reduce_range=settings["reduce_range"],
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return target


@dataclass(frozen=True)
class OnnxModel:
    """An ONNX Runtime classifier with LoadedModel's face: predict, labels, version, alias, manifest."""

    session: Any
    tokenizer: Any
    labels: tuple[str, ...]
    max_length: int = DEFAULT_MAX_LENGTH
    version: str | None = None
    alias: str | None = None
    backend: str = "onnx"
    manifest: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    device: str = "cpu"
    bf16: bool = False
    task: str = DEFAULT_TASK
    decision: dict[str, Any] = field(default_factory=dict, compare=False)

    stride: int = 0  # tokens consecutive windows share (a windowed task type: entities)

    def predict(self, texts: list[str], batch_size: int = 64, embeddings: bool = False) -> Predictions:
        """Probabilities for texts in batches of similar length, rows in input order (a windowed task type's
        per-text windows of token probabilities, as the torch backend gives them)."""
        if embeddings:
            raise ModelError(f"{self.backend} variant of {self.version}: embeddings come from the torch backend")
        wanted = {node.name for node in self.session.get_inputs()}
        if task_type(self.task).windowed:
            def run(inputs: dict[str, Any], owners: list[int], index: list[int]) -> Any:
                logits = self.session.run(None, {k: inputs[k].astype(np.int64) for k in wanted if k in inputs})[0]
                shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
                return shifted / shifted.sum(axis=-1, keepdims=True)

            outputs = windowed(self.tokenizer, texts, batch_size, self.max_length, self.stride, run)
            return Predictions(outputs, self.labels, None, self.task, self.decision)
        probabilities = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for index in length_batches(texts, batch_size):
            batch = tokenize(self.tokenizer, [texts[i] for i in index], self.max_length, "np")
            logits = self.session.run(None, {k: batch[k].astype(np.int64) for k in wanted if k in batch})[0]
            probabilities[index] = task_type(self.task).scores(logits)
        return Predictions(probabilities, self.labels, None, self.task, self.decision)


def load_onnx(graph: Path, model_dir: Path, variant: str, *, max_length: int = DEFAULT_MAX_LENGTH,
              version: str | None = None, alias: str | None = None,
              manifest: dict[str, Any] | None = None) -> OnnxModel:
    """An ONNX Runtime session over a variant's graph, with the tokenizer and labels of its model folder; as
    many threads as torch uses (the service sets those for the machine)."""
    import onnxruntime as ort
    import torch
    from transformers import AutoConfig, AutoTokenizer

    if not Path(graph).is_file():
        raise ModelError(f"{graph}: no {variant} variant; run the compress stage (or serve with backend torch)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    classes()  # a pooled head's config reads like any other once registered
    task = task_of_model(AutoConfig.from_pretrained(model_dir))
    stride = int(training_summary(Path(model_dir)).get("stride") or 0)
    return OnnxModel(session, AutoTokenizer.from_pretrained(model_dir), tuple(load_label_map(Path(model_dir))),
                     max_length, version, alias, variant, manifest, task=task, decision=load_decision(Path(model_dir)),
                     stride=stride)


def texts_per_second(model: Any, texts: list[str], batch_size: int, seconds: float, lanes: int = 1) -> float:
    """Throughput of `model.predict` on these texts in batches of batch_size (one warm-up pass first), with
    `lanes` threads each predicting its own batches at once (as the service's lanes do)."""
    from concurrent.futures import ThreadPoolExecutor

    model.predict(texts[:batch_size], batch_size)
    batches = [texts[begin : begin + batch_size] for begin in range(0, len(texts), batch_size)]
    start = time.perf_counter()
    stop_at = start + seconds

    def lane(offset: int) -> int:
        done, index = 0, offset
        while time.perf_counter() < stop_at:
            model.predict(batches[index % len(batches)], batch_size)
            done, index = done + len(batches[index % len(batches)]), index + lanes
        return done

    with ThreadPoolExecutor(lanes) as pool:
        done = sum(pool.map(lane, range(lanes)))
    return done / (time.perf_counter() - start)


def fastest(models: list[Any], batch_size: int, seconds: float = 0.5) -> Any:
    """The model with the most texts per second on this machine (every backend's figure is logged)."""
    texts = SAMPLE_TEXTS * max(1, batch_size // len(SAMPLE_TEXTS) + 1)
    speeds = {model.backend: texts_per_second(model, texts, batch_size, seconds) for model in models}
    best = max(models, key=lambda model: speeds[model.backend])
    figures = {name: round(value, 1) for name, value in speeds.items()}
    log.info("backend auto for %s: %s (texts/s at batch %d: %s)", best.version, best.backend, batch_size, figures)
    return best


def passed_variants(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Registered file name -> graph of every variant that passed parity (what the registry may serve)."""
    return {item["file"]: out / item["file"] for item in report.get("variants", {}).values() if item["passed"]}
