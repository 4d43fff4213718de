"""Entity extraction: character spans `(start, end, type)` per text (gradus/spans.py), being built.

Not yet offered as a `model.task`: what is written so far is the part of the type that works on spans alone —
reading a split's targets, the split, the tag vocabulary, the gate's comparison, the release's agreement and online
figure, the label counts — on top of the span readers and alignment (gradus/spans.py) and the figures
(entity_scores.py). Training, evaluation, the service and drift come next (docs/limits.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from gradus.config.pipeline import GateConfig, SplitConfig
from gradus.scoring import BootstrapResult, paired_bootstrap_of
from gradus.spans import Span, tag_vocabulary
from gradus.stratify import split_by_strata
from gradus.task_types.base import Agreement, Champion, Check, OnlineScore, label_changes
from gradus.task_types.entity_scores import entity_figures

ONLINE_BOOTSTRAP_SAMPLES = 1000  # resamples of a release's online entity-F1 interval


def as_spans(cell: Any) -> list[Span]:
    """A split's entity cell (dicts with start, end, type, as Parquet hands them back) as sorted spans."""
    if cell is None:
        return []
    return sorted(Span(int(e["start"]), int(e["end"]), str(e["type"])) for e in cell)


def match_counts(truth: Sequence[Iterable[Span]], answers: Sequence[Iterable[Span]]) -> np.ndarray:
    """Per text: (entities answered exactly right, answered wrongly, missed) — what entity micro-F1 sums."""
    counts = np.zeros((len(truth), 3), dtype=np.float64)
    for i, (gold, given) in enumerate(zip(truth, answers, strict=True)):
        gold, given = set(gold), set(given)
        counts[i] = (len(gold & given), len(given - gold), len(gold - given))
    return counts


def weighted_entity_f1(weights: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Entity micro-F1 for each row of `weights` (a bootstrap resample as counts per text): 2TP / (2TP + FP + FN);
    1.0 where neither side holds an entity."""
    tp, fp, fn = (weights @ counts[:, k] for k in range(3))
    total = 2 * tp + fp + fn
    return np.where(total > 0, 2 * tp / np.maximum(total, 1e-12), 1.0)


def paired_entity_f1(new: np.ndarray, old: np.ndarray, samples: int, confidence: float,
                     seed: int) -> BootstrapResult:
    """New minus old entity micro-F1 from per-text match counts on the same texts, its percentile interval by
    paired bootstrap over texts: the gate's comparison and the release's online figure."""
    return paired_bootstrap_of(lambda w: weighted_entity_f1(w, new) - weighted_entity_f1(w, old), len(new), samples,
                               confidence, seed)


class TokenClassification:
    name = "token_classification"
    target_column = "entities"
    primary_metric = "entity_micro_f1"
    primary_metric_name = "entity micro-F1"
    online_metric_name = "entity micro-F1"
    target_form = "spans"
    headline_metric = "entity_micro_f1"
    report_metrics = ("entity_micro_f1", "entity_macro_f1", "partial_f1", "word_accuracy")

    def targets(self, frame: pd.DataFrame) -> list[list[Span]]:
        return [as_spans(cell) for cell in frame[self.target_column]]

    def split(self, frame: pd.DataFrame, cfg: SplitConfig) -> pd.Series:
        """Iterative stratification over the entity types each text holds (a text without one: its own stratum),
        text groups kept together (gradus/stratify.py)."""
        strata = [{span.type for span in spans} or {"(no entity)"} for spans in self.targets(frame)]
        return split_by_strata(frame["text"], strata, cfg)

    def types(self, frame: pd.DataFrame) -> list[str]:
        return sorted(self.frequencies(self.targets(frame)))

    def vocabulary(self, frame: pd.DataFrame) -> list[str]:
        """The head's tags: O, then B- and I- of each entity type of the training data."""
        return tag_vocabulary(self.types(frame))

    def counted(self, answer: Iterable[Span]) -> list[str]:
        return [span.type for span in answer]

    def frequencies(self, answers: Iterable[Iterable[Span]]) -> Counter[str]:
        """How many entities of each type the answers hold."""
        return Counter(span.type for answer in answers for span in answer)

    def agreement(self, left: Sequence[Iterable[Span]], right: Sequence[Iterable[Span]]) -> np.ndarray:
        """Per text, the F1 of one answer's entities against the other's (exact spans and types; 1 when both
        found none)."""
        counts = match_counts(left, right)
        total = 2 * counts[:, 0] + counts[:, 1] + counts[:, 2]
        return np.where(total > 0, 2 * counts[:, 0] / np.maximum(total, 1e-12), 1.0)

    def agreements(self, champion: Sequence[Iterable[Span]], candidate: Sequence[Iterable[Span]]) -> list[Agreement]:
        """Entity F1 between the two models' answers per text, its mean against release.min_agreement."""
        return [Agreement("agreement (entity F1)", self.agreement(champion, candidate), False, "min_agreement")]

    def online_score(self, truth: Sequence[Iterable[Span]], candidate: Sequence[Iterable[Span]],
                     champion: Sequence[Iterable[Span]], confidence: float, seed: int) -> OnlineScore:
        """Entity micro-F1 of both on the texts users corrected, paired bootstrap over texts."""
        new, old = match_counts(truth, candidate), match_counts(truth, champion)
        boot = paired_entity_f1(new, old, ONLINE_BOOTSTRAP_SAMPLES, confidence, seed)
        ones = np.ones((1, len(new)))
        return OnlineScore(self.online_metric_name, float(weighted_entity_f1(ones, new)[0]),
                           float(weighted_entity_f1(ones, old)[0]), boot.delta, boot.low, boot.high,
                           f"paired bootstrap over texts, {ONLINE_BOOTSTRAP_SAMPLES} resamples")

    def compare(self, actual: list[list[Span]], challenger: list[list[Span]], champion: Champion,
                challenger_labels: list[str], cfg: GateConfig) -> tuple[dict[str, Any], list[Check]]:
        """Champion vs challenger on the same test texts (`labels` are entity types): entity micro-F1
        non-inferiority by paired bootstrap over texts, a per-type F1 drop check for types with gate.min_support
        test entities, added / removed types."""
        info, checks = label_changes(champion.labels, challenger_labels, cfg)
        info["rows_compared"] = len(actual)
        new, old = match_counts(actual, challenger), match_counts(actual, champion.predicted)
        boot = paired_entity_f1(new, old, cfg.bootstrap_samples, cfg.confidence, cfg.seed)
        ones = np.ones((1, len(actual)))
        scores = {"challenger": float(weighted_entity_f1(ones, new)[0]),
                  "champion": float(weighted_entity_f1(ones, old)[0])}
        checks.append(Check(
            "entity_f1_non_inferiority", boot.low >= -cfg.margin,
            f"entity micro-F1 challenger {scores['challenger']:.4f} vs champion {scores['champion']:.4f}: difference "
            f"{boot.delta:+.4f}, {boot.confidence:.0%} CI [{boot.low:+.4f}, {boot.high:+.4f}] (paired bootstrap over "
            f"texts, {boot.samples} resamples); lower bound must be >= -gate.margin {-cfg.margin:+.4f}"))
        per_type = self._per_type(actual, challenger, champion.predicted, cfg)
        dropped = [row for row in per_type if row["drop"] > cfg.max_class_recall_drop]
        rule = f"gate.min_support={cfg.min_support} test entities"
        detail = (", ".join(f"{r['type']} {r['f1_champion']:.2f}→{r['f1_challenger']:.2f}" for r in dropped[:10])
                  if dropped else f"largest drop {per_type[0]['drop']:+.3f}" if per_type else
                  "no type has enough entities")
        checks.append(Check(
            "per_type_f1", not dropped,
            f"{len(dropped)} of {len(per_type)} types with >= {rule} lose more than gate.max_class_recall_drop="
            f"{cfg.max_class_recall_drop:g} F1: {detail}" if dropped else
            f"no type with >= {rule} loses more than {cfg.max_class_recall_drop:g} F1 ({detail})"))
        return {"labels": info, "entity_micro_f1": scores, "bootstrap": asdict(boot), "per_type": per_type}, checks

    def _per_type(self, actual: list[list[Span]], new: list[list[Span]], old: list[list[Span]],
                  cfg: GateConfig) -> list[dict[str, Any]]:
        support = self.frequencies(actual)
        rows = []
        for kind in sorted(kind for kind, n in support.items() if n >= cfg.min_support):
            def f1(answers: list[list[Span]], kind: str = kind) -> float:
                counts = match_counts([[s for s in a if s.type == kind] for a in actual],
                                      [[s for s in a if s.type == kind] for a in answers])
                return float(weighted_entity_f1(np.ones((1, len(counts))), counts)[0])

            before, after = f1(old), f1(new)
            rows.append({"type": kind, "support": int(support[kind]), "f1_champion": round(before, 4),
                         "f1_challenger": round(after, 4), "drop": round(before - after, 4)})
        return sorted(rows, key=lambda row: -row["drop"])

    def figures(self, texts: Sequence[str], actual: Sequence[Sequence[Span]],
                predicted: Sequence[Sequence[Span]]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """The evaluation's figures (entity_scores.entity_figures)."""
        return entity_figures(texts, actual, predicted)


TASK = TokenClassification()


def swap_entities(text: str, spans: Sequence[Span], pool: dict[str, list[str]], rng: np.random.Generator
                  ) -> tuple[str, list[Span]] | None:
    """The behavioural check's perturbation: every entity replaced by another string of its type from the training
    data (`pool`: type -> strings), the spans moved with the text; None when no entity can be replaced."""
    out, moved, cursor, changed = "", [], 0, False
    for span in sorted(spans):
        choices = [s for s in pool.get(span.type, []) if s != text[span.start:span.end]]
        value = str(rng.choice(choices)) if choices else text[span.start:span.end]
        changed |= bool(choices)
        out += text[cursor:span.start]
        moved.append(Span(len(out), len(out) + len(value), span.type))
        out += value
        cursor = span.end
    return (out + text[cursor:], moved) if changed else None


def entity_pool(texts: Sequence[str], spans: Sequence[Sequence[Span]]) -> dict[str, list[str]]:
    """Each type's distinct entity strings in the training data, sorted (the swap check's replacements)."""
    pool: dict[str, set[str]] = {}
    for text, row in zip(texts, spans, strict=True):
        for span in row:
            pool.setdefault(span.type, set()).add(text[span.start:span.end])
    return {kind: sorted(values) for kind, values in pool.items()}
