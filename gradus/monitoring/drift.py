"""Drift monitor: compare a batch of new text with the champion's training data, with Evidently reports.

Signals: text descriptors (length, word count, non-letter share: Evidently descriptors; out-of-vocabulary
share against the training vocabulary), the champion's answered-label frequencies and confidence (top score),
its task type's own signals (label sets: labels per text and each label's score), and the champion's own
encoder embeddings (Evidently's embedding drift: a reference-vs-current classifier).
The decision to retrain needs enough drifted signals, a big enough batch, a cooled-down last retrain, and
a batch not already acted on.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradus import storage
from gradus.config.operations import DriftConfig
from gradus.config.params import Params
from gradus.errors import DataError
from gradus.io import write_json
from gradus.lineage import training_split
from gradus.modeling import LoadedModel, pick_device
from gradus.monitoring.records import MonitorRecords
from gradus.registry.versions import Registry, project_registry
from gradus.servable import load_version
from gradus.task_types.seam import task_type

TEXT_SIGNALS = ("text_length", "word_count", "non_letter_share", "oov_share")
MODEL_SIGNALS = ("predicted_label", "confidence", "embeddings")
# Stat tests whose score is a p-value (drift when below the threshold); the rest are distances.
P_VALUE_METHODS = {"jensenshannon_permutation", "ks", "chisquare", "z", "t_test", "mannw", "cramer_von_mises",
                   "anderson", "fisher_exact", "g_test", "epps_singleton", "empirical_mmd"}
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
# Evidently draws a t-SNE picture of up to this many embeddings per side with every embedding-drift
# result (the drift score itself uses all rows). At its default of 2,500 the picture costs ~16 s on 2 cores;
# 500 per side draws the same two clouds in ~1 s.
TSNE_POINTS_PER_SIDE = 500


# ------------------------------------------------------------------------------------------- data


def load_batch(uri: str, cfg: DriftConfig, root: Path) -> pd.DataFrame:
    """The new batch (a file, a glob, or an s3:// prefix) as text (+ label when configured and present)."""
    tables = storage.read_tables(uri, columns=[cfg.text_column], fix="Set drift.text_column in params.yaml",
                                 fmt=cfg.format, endpoint_url=cfg.endpoint_url, root=root)
    batch = pd.concat([_columns(table.frame, cfg) for table in tables], ignore_index=True)
    # Blank texts say nothing about language drift; they are the validate stage's business if retrained on.
    return batch[batch["text"].notna() & (batch["text"].astype(str).str.strip() != "")].reset_index(drop=True)


def _columns(table: pd.DataFrame, cfg: DriftConfig) -> pd.DataFrame:
    if "alias" in table.columns:  # the service's prediction log: a shadow copy repeats a text already served
        table = table[table["alias"] != "shadow"]
    out = pd.DataFrame({"text": table[cfg.text_column].astype(object)})
    if cfg.label_column and cfg.label_column in table.columns:
        out["label"] = table[cfg.label_column].astype(object)
    return out


def fingerprint(batch: pd.DataFrame) -> str:
    """Content hash of a batch: the same rows delivered again are the same batch, whatever the file name."""
    digest = hashlib.sha256()
    for column in sorted(batch.columns):
        digest.update(column.encode())
        digest.update("\x1f".join(map(str, batch[column])).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def vocabulary(texts: pd.Series) -> set[str]:
    return {word for text in texts for word in _WORD.findall(str(text).lower())}


def oov_share(texts: pd.Series, vocab: set[str]) -> np.ndarray:
    """Share of each text's words never seen in the reference (Evidently's OOV descriptor needs NLTK corpora
    downloaded at run time, and the training vocabulary is the more telling reference for a fine-tuned model)."""
    shares = []
    for text in texts:
        words = _WORD.findall(str(text).lower())
        shares.append(sum(word not in vocab for word in words) / len(words) if words else 0.0)
    return np.array(shares, dtype=float)


# ---------------------------------------------------------------------------------------- reports


def _drifted(score: float, method: str, threshold: float) -> bool:
    return score < threshold if method in P_VALUE_METHODS else score >= threshold


def text_report(reference: pd.Series, current: pd.Series, cfg: DriftConfig) -> tuple[Any, dict[str, Any]]:
    """Evidently report over the text descriptors of every row."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.descriptors import NonLetterCharacterPercentage, TextLength, WordCount
    from evidently.metrics import ValueDrift

    # Evidently's non-letter descriptor divides by the text length: empty texts (nothing to drift) are left out.
    reference, current = (side[side.astype(str).str.len() > 0].reset_index(drop=True) for side in (reference, current))
    # A reference text's words are all in the reference vocabulary by construction; so each half of the
    # reference is scored against the other half's vocabulary, and the current batch against the first half's.
    halves = np.arange(len(reference)) % 2 == 0
    vocab_a, vocab_b = vocabulary(reference[halves]), vocabulary(reference[~halves])
    reference_oov = np.where(halves, oov_share(reference, vocab_b), oov_share(reference, vocab_a))
    definition = DataDefinition(text_columns=["text"], numerical_columns=["oov_share"])

    def dataset(texts: pd.Series, oov: np.ndarray) -> Any:
        frame = pd.DataFrame({"text": texts.astype(str).to_numpy(), "oov_share": oov})
        return Dataset.from_pandas(frame, data_definition=definition, descriptors=[
            TextLength("text", alias="text_length"), WordCount("text", alias="word_count"),
            NonLetterCharacterPercentage("text", alias="non_letter_share")])

    signals = [s for s in TEXT_SIGNALS if s in cfg.signals]
    metrics = [ValueDrift(column=s, method=cfg.numerical_method, threshold=cfg.numerical_threshold) for s in signals]
    snapshot = Report(metrics).run(dataset(current, oov_share(current, vocab_a)), dataset(reference, reference_oov))
    return snapshot, {s: _signal(v, cfg.numerical_method, cfg.numerical_threshold, len(reference), len(current))
                      for s, v in zip(signals, _values(snapshot), strict=True)}


def _signal(score: float, method: str, threshold: float, reference_rows: int, current_rows: int) -> dict[str, Any]:
    return {"score": round(float(score), 6), "method": method, "threshold": threshold,
            "drifted": _drifted(float(score), method, threshold),
            "rows": {"reference": reference_rows, "current": current_rows}}


def _values(snapshot: Any) -> list[float]:
    return [float(metric["value"]) for metric in snapshot.dict()["metrics"]]


def label_shift_p_value(reference: Sequence[Any], current: Sequence[Any], permutations: int, seed: int) -> float:
    """Permutation test of the Jensen-Shannon distance between two predicted-label distributions. Each text counts
    towards every label it was answered (a label, or each label of a set: per-label frequencies), and shuffling
    the texts between the sides gives the null distribution.

    By hand: a distance threshold means a different false-alarm rate for every sample size and label count
    (77 labels at 1,000 rows per side give same-distribution distances of 0.10-0.13), and the chi-square test
    breaks on labels one sample never predicts. Shuffling the pooled texts gives the null distribution for
    exactly these sizes."""
    from scipy.spatial.distance import jensenshannon

    answers = [[answer] if isinstance(answer, str) else list(answer) for answer in [*reference, *current]]
    labels = sorted({label for answer in answers for label in answer})
    column = {label: c for c, label in enumerate(labels)}
    hot = np.zeros((len(answers), len(labels)), dtype=np.int64)
    for row, answer in enumerate(answers):
        hot[row, [column[label] for label in answer]] = 1
    n, total = len(reference), hot.sum(axis=0)

    def distance(order: np.ndarray) -> float:
        right = hot[order[n:]].sum(axis=0)
        left = total - right
        if not left.sum() or not right.sum():
            return 0.0
        return float(jensenshannon(left / left.sum(), right / right.sum()))

    observed = distance(np.arange(len(answers)))
    rng = np.random.default_rng(seed)
    null = np.array([distance(rng.permutation(len(answers))) for _ in range(permutations)])
    return float((1 + np.sum(null >= observed)) / (1 + permutations))


NO_LABEL = "(none)"  # the report's category of a text answered with no label (an empty label set)


def model_frame(texts: list[str], champion: LoadedModel) -> tuple[pd.DataFrame, list[list[str]]]:
    """The champion's view of each text: its task type's own signal columns, the answered labels as one category
    (a label; a label set), the confidence (top score) and the mean-pooled embedding; and each text's answered
    labels, for the per-label frequency test."""
    predictions = champion.predict(texts, 64, embeddings=True)
    kind = task_type(champion.task)
    answered = [sorted(kind.counted(answer)) for answer in predictions.answers()]
    embeddings = predictions.embeddings
    frame = pd.DataFrame(embeddings, columns=[f"emb_{i}" for i in range(embeddings.shape[1])])
    frame.insert(0, "predicted_label", [", ".join(labels) or NO_LABEL for labels in answered])
    frame.insert(1, "confidence", predictions.confidence.astype(float))
    own = kind.prediction_signals(predictions.probabilities, list(predictions.label_names), predictions.decision)
    return pd.concat([own.reset_index(drop=True), frame], axis=1), answered


def model_report(reference: pd.Series, current: pd.Series, champion: LoadedModel,
                 cfg: DriftConfig) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Evidently report over the champion's view of a seeded sample of each side (forward passes cost)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.legacy.metrics.data_drift import embeddings_drift
    from evidently.metrics import EmbeddingsDrift, ValueDrift
    from evidently.metrics.embeddings import ModelDriftMethod

    embeddings_drift.SAMPLE_CONSTANT = TSNE_POINTS_PER_SIDE

    rng = np.random.default_rng(cfg.seed)
    sizes = {"reference": cfg.reference_model_rows, "current": cfg.max_model_rows}
    sample = {name: side.iloc[np.sort(rng.choice(len(side), min(len(side), sizes[name]), replace=False))]
              for name, side in (("reference", reference), ("current", current))}
    views = {name: model_frame(list(side.astype(str)), champion) for name, side in sample.items()}
    frames = {name: frame for name, (frame, _) in views.items()}
    embedding_columns = [c for c in frames["current"].columns if c.startswith("emb_")]
    # The task type's own signals: a column each, or `<signal>:<part>` columns judged together (each label's score).
    own_columns = [c for c in frames["current"].columns if not c.startswith("emb_")
                   and c not in ("predicted_label", "confidence")]
    parts: dict[str, list[str]] = {}
    for column in own_columns:
        parts.setdefault(column.split(":", 1)[0], []).append(column)
    definition = DataDefinition(numerical_columns=["confidence", *own_columns, *embedding_columns],
                                categorical_columns=["predicted_label"], embeddings={"champion": embedding_columns})
    datasets = {name: Dataset.from_pandas(frame, data_definition=definition) for name, frame in frames.items()}
    wanted = [s for s in cfg.signals if s in MODEL_SIGNALS or s in parts]

    def value_drift(column: str) -> Any:
        return ValueDrift(column=column, method=cfg.numerical_method, threshold=cfg.numerical_threshold)

    metrics = {"predicted_label": [ValueDrift(column="predicted_label", method="jensenshannon", threshold=0.1)],
               "confidence": [value_drift("confidence")],
               "embeddings": [EmbeddingsDrift(embeddings_name="champion",
                                              drift_method=ModelDriftMethod(threshold=cfg.embeddings_threshold))],
               **{name: [value_drift(column) for column in columns] for name, columns in parts.items()}}
    snapshot = Report([m for s in wanted for m in metrics[s]]).run(datasets["current"], datasets["reference"])
    values = iter(_values(snapshot))
    rows = {name: len(s) for name, s in sample.items()}
    signals = {}
    for name in wanted:
        scores = [next(values) for _ in metrics[name]]
        if name == "predicted_label":
            p = label_shift_p_value(views["reference"][1], views["current"][1], cfg.label_permutations, cfg.seed)
            signals[name] = {**_signal(p, "jensenshannon_permutation", cfg.label_p_value, rows["reference"],
                                       rows["current"]), "jensenshannon": round(scores[0], 6)}
        elif name == "embeddings":
            signals[name] = _signal(scores[0], "domain_classifier_roc_auc", cfg.embeddings_threshold,
                                    rows["reference"], rows["current"])
        elif len(scores) == 1:
            signals[name] = _signal(scores[0], cfg.numerical_method, cfg.numerical_threshold, rows["reference"],
                                    rows["current"])
        else:
            signals[name] = _combined(parts[name], scores, cfg, rows)
    distribution = {name: frame["predicted_label"].value_counts(normalize=True).round(4).head(10).to_dict()
                    for name, frame in frames.items()}
    return snapshot, signals, {"sampled": len(reference) > sizes["reference"] or len(current) > sizes["current"],
                               "rows": rows, "top_predicted_labels": distribution}


def _combined(columns: list[str], scores: list[float], cfg: DriftConfig, rows: dict[str, int]) -> dict[str, Any]:
    """One signal judged over several distributions (each label's score): a p-value test's smallest p-value times
    their number (Bonferroni: the false-alarm rate of one signal, not one per label); a distance's largest."""
    if cfg.numerical_method in P_VALUE_METHODS:
        worst = int(np.argmin(scores))
        score, rule = min(1.0, scores[worst] * len(scores)), f"smallest p-value x {len(scores)} (Bonferroni)"
    else:
        worst = int(np.argmax(scores))
        score, rule = scores[worst], f"largest of {len(scores)}"
    return {**_signal(score, cfg.numerical_method, cfg.numerical_threshold, rows["reference"], rows["current"]),
            "combined": rule, "worst": columns[worst].split(":", 1)[1], "worst_score": round(float(scores[worst]), 6)}


# --------------------------------------------------------------------------------------- decision


def decide(signals: dict[str, Any], current_rows: int, cfg: DriftConfig, last_retrain: datetime | None,
           already_triggered: bool, now: datetime) -> dict[str, Any]:
    """Retrain only on significant drift, with enough rows, after the cooldown, once per batch."""
    drifted = [name for name in cfg.signals if signals.get(name, {}).get("drifted")]
    measured = [name for name in cfg.signals if name in signals]
    checks = {
        "significant": (len(drifted) >= cfg.min_drifted_signals,
                        f"{len(drifted)} of {len(measured)} signals drifted ({', '.join(drifted) or 'none'}); "
                        f"drift.min_drifted_signals={cfg.min_drifted_signals}"),
        "enough_rows": (current_rows >= cfg.min_samples,
                        f"batch has {current_rows} rows; drift.min_samples={cfg.min_samples}"),
        "cooled_down": (last_retrain is None or now - last_retrain >= timedelta(hours=cfg.cooldown_hours),
                        "no retrain yet" if last_retrain is None else
                        f"last retrain {(now - last_retrain).total_seconds() / 3600:.1f} h ago; "
                        f"drift.cooldown_hours={cfg.cooldown_hours:g}"),
        "new_batch": (not already_triggered, "this batch already triggered a retrain" if already_triggered
                      else "batch not seen before"),
    }
    retrain = all(ok for ok, _ in checks.values())
    return {"retrain": retrain, "drifted_signals": drifted,
            "checks": {name: {"passed": ok, "detail": detail} for name, (ok, detail) in checks.items()},
            "reasons": [detail for ok, detail in checks.values() if not ok] if not retrain else
                       [checks["significant"][1]]}


def last_retrain(registry: Registry) -> datetime | None:
    """The latest of: a registered version, a retrain the monitor started."""
    records = MonitorRecords(registry.store)
    times = [m["created_at"] for m in registry.versions()] + [t["at"] for t in records.triggers()]
    return max((datetime.fromisoformat(t.replace("Z", "+00:00")) for t in times), default=None)


# ------------------------------------------------------------------------------------------ stage


def champion_and_reference(registry: Registry, root: Path, params: Params) -> tuple[LoadedModel, pd.DataFrame]:
    """The champion (verified) and its training split, found through its lineage."""
    if registry.aliases().champion is None:
        raise DataError("drift monitor: no champion in the registry yet; train and pass the gate first")
    champion = load_version(registry, "champion", pick_device(params.train.device))
    return champion, pd.read_parquet(io.BytesIO(training_split(root, champion.manifest or {})))


def analyse(reference: pd.DataFrame, batch: pd.DataFrame, champion: LoadedModel, cfg: DriftConfig,
            out_dir: Path) -> dict[str, Any]:
    """Both Evidently reports (HTML kept in out_dir) and the per-signal drift scores."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text_snapshot, signals = text_report(reference["text"], batch["text"], cfg)
    text_snapshot.save_html(str(out_dir / "text_drift.html"))
    sample: dict[str, Any] = {"sampled": False}
    if any(s not in TEXT_SIGNALS for s in cfg.signals):
        model_snapshot, model_signals, sample = model_report(reference["text"], batch["text"], champion, cfg)
        model_snapshot.save_html(str(out_dir / "model_drift.html"))
        signals |= model_signals
    # A signal of another task type (label sets' label_cardinality on a one-label champion) is not measured.
    skipped = {s: f"not a signal of the champion's task type ({champion.task})" for s in cfg.signals
               if s not in signals}
    return {"signals": signals, "model_sample": sample, **({"not_measured": skipped} if skipped else {})}


def run_monitor(root: Path, params: Params, current: str, now: datetime | None = None) -> dict[str, Any]:
    """Load, analyse, decide; write reports/drift/<time>-<batch>/ with the HTML reports and summary.json."""
    now = now or datetime.now(UTC)
    cfg = params.drift
    batch = load_batch(current, cfg, root)
    batch_id = fingerprint(batch)
    registry = project_registry(root, params)
    champion, reference = champion_and_reference(registry, root, params)
    manifest = champion.manifest or {}
    out_dir = root / params.paths.drift_reports / f"{now:%Y%m%dT%H%M%SZ}-{batch_id[:12]}"
    analysis = analyse(reference, batch, champion, cfg, out_dir)
    decision = decide(analysis["signals"], len(batch), cfg, last_retrain(registry),
                      MonitorRecords(registry.store).trigger(batch_id) is not None, now)
    summary = {"at": now.isoformat(), "current": current, "batch": batch_id, "rows": {"current": len(batch),
               "reference": len(reference)}, "labeled": "label" in batch.columns, "champion": manifest["version"],
               "reference": f"{manifest['version']}: train split {manifest['lineage']['datasets'].get('splits')}",
               **analysis, "decision": decision, "reports": sorted(str(p) for p in out_dir.glob("*.html"))}
    write_json(summary, out_dir / "summary.json")
    MonitorRecords(registry.store).record_drift({
        "at": summary["at"], "batch": batch_id, "champion": manifest["version"],
        "rows": len(batch), "drifted_signals": decision["drifted_signals"],
        "signals": {name: bool(s["drifted"]) for name, s in analysis["signals"].items()},
        "retrain": decision["retrain"]})
    return summary | {"summary_file": str(out_dir / "summary.json")}

