"""The frozen-encoder probe: the base model left as it is, its pooled and normalised embeddings of each text
fed to a logistic regression whose regularisation is chosen on the validation split. It is the baseline a
fine-tuned model must beat to earn its cost: on Banking77 such a probe of the packaged MiniLM scores
92.76 % test accuracy after two minutes of embedding on 2 cores, as much as fine-tuning the whole encoder
with the recipe of 2026-11 — a TF-IDF baseline, four points lower, hid that.

By hand, in a few lines: sentence-transformers (whose pooling this reads and repeats) is not a dependency,
and SetFit fits its head on a contrastively trained body, not on the frozen one a probe measures.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradus.modeling import length_batches, resolve_base, tokenize
from gradus.pooled import pool

POOLING_FILE = "1_Pooling/config.json"  # sentence-transformers' record of how the encoder was trained to pool
C_GRID = (0.25, 1.0, 4.0, 16.0, 64.0)     # inverse regularisation strengths tried on the validation split


def pooling_mode(folder: Path) -> str:
    """How the base model pools token states into a text embedding: what its sentence-transformers pooling
    config says (mean, cls or max); mean where there is none (the usual choice for an encoder)."""
    config = folder / POOLING_FILE
    if not config.is_file():
        return "mean"
    modes = json.loads(config.read_text(encoding="utf-8"))
    for mode in ("cls_token", "max_tokens", "mean_tokens"):
        if modes.get(f"pooling_mode_{mode}"):
            return mode.split("_")[0]
    return "mean"


def embed(location: str, texts: list[str], max_length: int, batch_size: int, device: str,
          pooling: str) -> np.ndarray:
    """L2-normalised text embeddings of the base model (no head, no training), rows in input order."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(location)
    encoder = AutoModel.from_pretrained(location, use_safetensors=True).to(device).eval()
    out = np.zeros((len(texts), encoder.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for index in length_batches(texts, batch_size):
            batch = tokenize(tokenizer, [texts[i] for i in index], max_length, "pt").to(device)
            pooled = pool(encoder(**batch).last_hidden_state.float(), batch["attention_mask"], pooling)
            out[index] = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
    return out


def fit_head(train_x: np.ndarray, train_y: list[str], val_x: np.ndarray, val_y: list[str],
             grid: tuple[float, ...] = C_GRID, seed: int = 0) -> tuple[Any, float, float]:
    """The logistic regression whose C scores best on the validation split: (model, C, validation accuracy).
    Ties go to the stronger regularisation (the smaller C)."""
    from sklearn.linear_model import LogisticRegression

    best: tuple[float, float, Any] | None = None
    for c in grid:
        model = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(train_x, train_y)
        accuracy = float(np.mean(model.predict(val_x) == np.asarray(val_y))) if len(val_y) else 0.0
        if best is None or accuracy > best[0]:
            best = (accuracy, c, model)
    assert best is not None
    return best[2], best[1], best[0]


@dataclass(frozen=True)
class LinearHead:
    """A linear head fitted on frozen embeddings: its coefficients (one row per label, in the run's label order),
    intercepts, the C chosen, its validation scores (the task type's metric keys) and the fitted model(s)."""

    coef: np.ndarray
    intercept: np.ndarray
    C: float
    val_scores: dict[str, float]
    model: Any = None

    def logits(self, x: np.ndarray, labels: int) -> np.ndarray:
        """The head's logits for embeddings `x` over `labels` columns (a binary regression's one row w gives
        [0, w.x + b], as the pooled head holds it: gradus/pooled.set_head)."""
        z = x @ np.asarray(self.coef, dtype=np.float64).T + np.asarray(self.intercept, dtype=np.float64)
        return np.hstack([np.zeros_like(z), z]) if z.shape[1] == 1 and labels == 2 else z


HeadFit = Callable[[np.ndarray, pd.DataFrame, np.ndarray, pd.DataFrame, int], LinearHead]


def label_head(train_x: np.ndarray, train: pd.DataFrame, val_x: np.ndarray, val: pd.DataFrame,
               seed: int = 0) -> LinearHead:
    """One label per text: the multinomial logistic regression of `fit_head`, scored by accuracy and macro-F1."""
    from sklearn.metrics import f1_score

    head, c, val_accuracy = fit_head(train_x, list(train["label"]), val_x, list(val["label"]), seed=seed)
    val_f1 = (float(f1_score(val["label"], head.predict(val_x), average="macro", zero_division=0))
              if len(val) else 0.0)
    return LinearHead(head.coef_, head.intercept_, c, {"accuracy": val_accuracy, "macro_f1": val_f1}, head)


@dataclass(frozen=True)
class Probe:
    """A fitted probe: the linear head, the pooling it read, what it cost, and the embeddings of any further texts
    asked for (one encoder load)."""

    head: LinearHead
    pooling: str
    seconds: float
    embedding_seconds: float
    extra: np.ndarray
    val: np.ndarray | None = None  # the validation split's embeddings

    @property
    def C(self) -> float:
        return self.head.C

    @property
    def val_scores(self) -> dict[str, float]:
        return self.head.val_scores

    @property
    def val_accuracy(self) -> float:
        return self.head.val_scores.get("accuracy", 0.0)

    @property
    def val_macro_f1(self) -> float:
        return self.head.val_scores.get("macro_f1", 0.0)

    def summary(self) -> dict[str, Any]:
        return {"C": self.C, **{f"val_{key}": round(value, 6) for key, value in self.val_scores.items()},
                "pooling": self.pooling, "seconds": round(self.seconds, 2),
                "embedding_seconds": round(self.embedding_seconds, 2)}


def fit_probe(location: str, train: pd.DataFrame, val: pd.DataFrame, max_length: int, batch_size: int,
              device: str, seed: int = 0, extra_texts: list[str] | None = None, fit: HeadFit = label_head) -> Probe:
    """Embed train, val (and extra_texts) with the frozen base at `location` and fit the head (`fit`: the task
    type's; one label per text by default), C chosen on val."""
    started = time.perf_counter()
    pooling = pooling_mode(Path(location))
    extra_texts = list(extra_texts or [])
    texts = [*train["text"], *val["text"], *extra_texts]  # one load of the encoder for everything
    vectors = embed(location, texts, max_length, batch_size, device, pooling)
    embedded = time.perf_counter() - started
    train_x, val_x, extra = np.split(vectors, [len(train), len(train) + len(val)])
    head = fit(train_x, train, val_x, val, seed)
    return Probe(head, pooling, time.perf_counter() - started, embedded, extra, val_x)


def probe_baseline(base: str, revision: str | None, train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame,
                   max_length: int, batch_size: int, device: str, seed: int = 0, task: str | None = None,
                   params: Any = None) -> dict[str, Any]:
    """Fit the probe on train (C chosen on val; the task type's head, one label per text by default) and score
    it on test with the type's metrics (accuracy and macro-F1; for label sets under thresholds chosen on val by the
    type's rule with `params`), the C chosen, the pooling used and what it cost in seconds (embedding every split,
    then the fits)."""
    from gradus.config.pipeline import StageParams
    from gradus.task_types.seam import DEFAULT_TASK, task_type

    started = time.perf_counter()
    kind = task_type(task or DEFAULT_TASK)
    location = resolve_base(base, revision).location
    probe = fit_probe(location, train, val, max_length, batch_size, device, seed, list(test["text"]),
                      fit=kind.fit_probe_head)
    labels = kind.vocabulary(train)
    val_logits = probe.head.logits(probe.val, len(labels)) if probe.val is not None else np.zeros((0, len(labels)))
    decision = kind.decision(np.asarray(kind.encode_targets(val, labels)), lambda: kind.scores(val_logits), labels,
                             params if params is not None else StageParams())
    figures = (kind.metrics(np.asarray(kind.encode_targets(test, labels)), probe.head.logits(probe.extra, len(labels)),
                            decision | ({"labels": labels} if decision else {}))
               if len(test) else {})
    return {**{key: round(value, 6) for key, value in figures.items()},
            "C": probe.C, **{f"val_{key}": round(value, 6) for key, value in probe.val_scores.items()},
            "pooling": probe.pooling, "seconds": round(time.perf_counter() - started, 2),
            "embedding_seconds": round(probe.embedding_seconds, 2)}
