"""Entity extraction: character spans `(start, end, type)` per text (gradus/spans.py), being built.

Not yet offered as a `model.task`: what is written so far is the part of the type that works on spans alone —
reading a split's targets, the split, the tag vocabulary, the gate's comparison, the release's agreement and online
figure, the label counts — on top of the span readers and alignment (gradus/spans.py) and the figures
(entity_scores.py). Training, evaluation, the service and drift come next (docs/limits.md).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from gradus.config.pipeline import EvaluateConfig, GateConfig, SplitConfig, StageParams
from gradus.errors import ConfigError, DataError
from gradus.scoring import BootstrapResult, paired_bootstrap_of
from gradus.spans import (
    BIO_CELL,
    IGNORE,
    Read,
    Span,
    TextWindows,
    decode_spans,
    from_bio,
    from_entities,
    resolve_overlaps,
    tag_vocabulary,
    token_labels,
    unknown_types,
    word_ranges,
    word_tags,
)
from gradus.stratify import split_by_strata
from gradus.task_types.base import (
    Agreement,
    Champion,
    Check,
    OnlineScore,
    RowRule,
    Scored,
    Targets,
    label_changes,
    short_labels,
    weighted_mean,
)
from gradus.task_types.entity_scores import dictionary_baseline, entity_figures
from gradus.text import normalize_text

ONLINE_BOOTSTRAP_SAMPLES = 1000  # resamples of a release's online entity-F1 interval


def as_spans(cell: Any) -> list[Span]:
    """A split's entity cell or an answer (spans, or dicts with start, end, type as Parquet and the service hold
    them) as sorted spans."""
    if cell is None:
        return []
    return sorted(e if isinstance(e, Span) else Span(int(e["start"]), int(e["end"]), str(e["type"])) for e in cell)


def types_of(vocabulary: Sequence[str]) -> list[str]:
    """The entity types of a tag vocabulary (O, B-x, I-x, ...), sorted; a list of types stays as it is."""
    return sorted({tag[2:] if tag[:2] in ("B-", "I-") else tag for tag in vocabulary if tag != "O"})


def type_of(span: Span | dict[str, Any]) -> str:
    """An entity's type, whether a Span or its row (a dict, as Parquet and the service hold it)."""
    return span.type if isinstance(span, Span) else str(span["type"])


def read_cell(text: str | None, cell: str | None, cell_type: str | None, policy: str) -> Read | None:
    """One raw snapshot cell read into spans (None where the text is missing: the text's own rule names it): a
    list of entities (JSON array, or a string holding one, as CSV carries it) or tokens with tags (BIO_CELL)."""
    if text is None:
        return None
    if cell is None:
        return Read(text, [], "no entities cell: give [] for a text without entities")
    if cell_type not in (None, "array", BIO_CELL):
        return Read(text, [], f"the entities cell is a JSON {cell_type} ({cell[:80]}), not a list of entities")
    try:
        value = json.loads(cell)
    except ValueError:
        return Read(text, [], f"the entities cell is not a JSON list of entities: {cell[:80]!r}")
    if cell_type == BIO_CELL:
        tokens, tags = value.get("tokens"), value.get("tags")
        if not isinstance(tokens, list) or not all(isinstance(token, str) for token in tokens):
            return Read(text, [], "tokens is not a list of strings")
        if not isinstance(tags, list):
            return Read(text, [], "tags is not a list of tags")
        return from_bio(tokens, tags, policy)
    if not isinstance(value, list):
        return Read(text, [], f"the entities cell is not a list of entities: {cell[:80]!r}")
    return from_entities(text, value)


def entity_key(text: str, spans: Sequence[Span]) -> str:
    """A row's canonical target, independent of where the text's whitespace falls: its entities' normalised
    surface texts with their types, in order (the same normalised text with two keys is a conflict)."""
    return json.dumps([[normalize_text(text[s.start:s.end]), s.type] for s in spans], ensure_ascii=False)


def window_problem(count: int | None, limit: int) -> str:
    return (f"the text is {count} tokens, over train.max_length {limit} (entities.long_texts: window reads it in "
            "strided windows instead)")


def match_counts(truth: Sequence[Iterable[Span]], answers: Sequence[Iterable[Span]]) -> np.ndarray:
    """Per text: (entities answered exactly right, answered wrongly, missed) — what entity micro-F1 sums."""
    counts = np.zeros((len(truth), 3), dtype=np.float64)
    for i, (gold, given) in enumerate(zip(truth, answers, strict=True)):
        gold, given = set(as_spans(gold)), set(as_spans(given))
        counts[i] = (len(gold & given), len(given - gold), len(gold - given))
    return counts


def of_type(rows: Sequence[Any], kind: str) -> list[list[Span]]:
    """Each row's entities of one type (rows of spans or of entity dicts)."""
    return [[span for span in as_spans(row) if span.type == kind] for row in rows]


def exact_scores(truth: Sequence[Any], answers: Sequence[Any]) -> dict[str, Any]:
    """Exact-match precision, recall and F1 of answers against the truth, summed over texts (F1 1.0 where neither
    holds an entity, as weighted_entity_f1 counts it), and the support (true entities)."""
    tp, fp, fn = match_counts(truth, answers).sum(axis=0)
    return {"precision": float(tp / (tp + fp)) if tp + fp else 0.0,
            "recall": float(tp / (tp + fn)) if tp + fn else 0.0,
            "f1": float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 1.0, "support": int(tp + fn)}


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

    problem_type = None  # the token-classification head computes its own per-token cross-entropy
    architecture_suffix = "ForTokenClassification"  # the model class's name ends so (how a saved model's task is told)
    auto_model = "AutoModelForTokenClassification"  # the transformers class that builds and loads its model
    probe_heads = False  # a frozen-encoder probe (one embedding per text) can answer it: lp_ft, auto, probe
    label_cells_are_labels = False  # a cell is a structure (entities; tokens with tags): ingest keeps it whole

    def targets(self, frame: pd.DataFrame) -> list[list[Span]]:
        return [as_spans(cell) for cell in frame[self.target_column]]

    def floors(self, cfg: GateConfig) -> list[tuple[str, str, float]]:
        """gate.min_entity_f1 on entity micro-F1."""
        return [("min_entity_f1", "entity_micro_f1", cfg.min_entity_f1)]

    def settings(self, params: StageParams) -> dict[str, Any]:
        """The entities section (overlap and BIO policies, long texts, the windows' stride)."""
        return {"task_settings": params.entities.model_dump()}

    def demo(self, rows: int, seed: int) -> tuple[pd.DataFrame, str]:
        """Support messages with amounts, dates, card endings and merchants marked (gradus.demo)."""
        from gradus.demo import generate_entities

        return generate_entities(rows, seed), "support-entities"

    def read_targets(self, frame: pd.DataFrame, params: StageParams) -> Targets:
        """Each cell read into spans (gradus/spans.py: exported entities or tokens with BIO tags), overlaps resolved
        by entities.overlaps, types case-folded by data.label_case; `label_problem` says why a row's entities
        cannot be used ('' when they can): the cell's own fault, a type outside the vocabulary (validate.
        allowed_labels, else the types with validate.min_examples_per_class entities), or a text over the model's
        window when entities.long_texts is quarantine."""
        cfg, own = params.validation, params.entities
        reads: list[Read | None] = []
        repaired = dropped = 0
        for text, cell, cell_type in zip(frame["text"], frame["label"], frame["label_type"], strict=True):
            read = read_cell(text, cell, cell_type, own.invalid_bio)
            if read is not None and read.problem is None:
                spans = [Span(s.start, s.end, s.type.lower() if params.data.label_case == "lower" else s.type)
                         for s in read.spans]
                kept, why, lost = resolve_overlaps(spans, own.overlaps)
                repaired, dropped = repaired + read.repaired, dropped + lost
                read = Read(read.text, kept, why, read.repaired)
            reads.append(read)
        inferred = cfg.allowed_labels is None
        counts = self.frequencies(read.spans for read in reads if read is not None and read.problem is None)
        vocabulary = (sorted(kind for kind, n in counts.items() if n >= cfg.min_examples_per_class) if inferred
                      else list(cfg.allowed_labels or ()))
        over = self._over_window(frame["text"], params) if own.long_texts == "quarantine" else {}
        problems: list[str] = []
        for row, read in enumerate(reads):
            if read is None:
                problems.append("")
            elif read.problem is not None:
                problems.append(read.problem)
            elif unknown := unknown_types(read.spans, vocabulary):
                problems.append(f"entity type(s) {unknown} not among the types with at least "
                                f"{cfg.min_examples_per_class} entities (validate.min_examples_per_class)" if inferred
                                else f"entity type(s) {unknown} not in validate.allowed_labels")
            else:
                problems.append(window_problem(over[row], params.train.max_length) if row in over else "")
        index = frame.index
        usable = [read if read is not None and read.problem is None else None for read in reads]
        entities = [None if read is None else [span.row() for span in read.spans] for read in usable]
        keys = [None if read is None else entity_key(read.text, read.spans) for read in usable]
        columns = {self.target_column: pd.Series(entities, index=index, dtype=object),
                   "label_problem": pd.Series(problems, index=index, dtype=object)}
        return Targets(columns=columns, key=pd.Series(keys, index=index, dtype=object), vocabulary=vocabulary,
                       inferred=inferred, counts={"bio_tags_repaired": repaired, "overlapping_spans_dropped": dropped})

    @staticmethod
    def _over_window(texts: pd.Series, params: StageParams) -> dict[int, int]:
        """Rows whose text takes more than train.max_length tokens (the base model's tokenizer), with the count;
        only texts longer than that in characters are tokenized (a token covers at least one character)."""
        from gradus.modeling import token_counter

        limit = params.train.max_length
        doubtful = [row for row, text in enumerate(texts) if isinstance(text, str) and len(text) > limit - 2]
        counts = token_counter(params.model.base, params.model.revision)([texts.iloc[row] for row in doubtful])
        return {row: n for row, n in zip(doubtful, counts, strict=True) if n > limit}

    def row_rules(self, params: StageParams, targets: Targets) -> list[RowRule]:
        """The cell is a list of entities or tokens with tags, and its entities can be used (label_problem)."""
        return [RowRule("label_type", "label_type", "in_set", "the entities cell is neither a list of entities nor "
                        "tokens with tags in the source (its JSON type is in label_type)", ("array", BIO_CELL)),
                RowRule("entities", "label_problem", "in_set", "the entities cannot be used", ("",),
                        detail_column="label_problem")]

    def batch_failures(self, kept: pd.DataFrame, params: StageParams) -> list[str]:
        """An allowed type with fewer kept entities than validate.min_examples_per_class. (No imbalance check:
        entity types are imbalanced by nature: in HWU64-slots' training data date has 905 entities, game_type 1.)"""
        cfg = params.validation
        if cfg.allowed_labels is None:
            return []
        counts = pd.Series(self.frequencies(self.targets(kept)), dtype="int64").sort_index()
        return short_labels(counts, cfg.allowed_labels, cfg.min_examples_per_class, "entity types")

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

    baseline_name = "dictionary baseline"  # every training entity string found in the text (entity_scores)
    windowed = True  # a model's output per text is its windows' token probabilities (spans.TextWindows)

    def encode_targets(self, frame: pd.DataFrame, vocabulary: list[str]) -> list[list[Span]]:
        """The spans (tokenization is `encode`'s); a type outside the training types is refused naming it."""
        targets = self.targets(frame)
        unknown = sorted(set(self.frequencies(targets)) - {tag[2:] for tag in vocabulary if tag != "O"})
        if unknown:
            raise DataError(f"entity types {unknown[:5]} appear in val/test but not in train; add training examples")
        return targets

    def encode(self, frame: pd.DataFrame, tokenizer: Any, vocabulary: list[str], max_length: int,
               params: StageParams) -> tuple[dict[str, list[list[int]]], list[Any]]:
        """A row per window of each text (train.max_length tokens, entities.stride shared between consecutive
        windows): each word's BIO tag on its first sub-token in the window, the rest ignored (spans.token_labels;
        words and their tags from the tokenizer's offset mapping, over all of a text's windows)."""
        spans = self.encode_targets(frame, vocabulary)
        index = {tag: i for i, tag in enumerate(vocabulary)}
        encoded = tokenize_windows(tokenizer, list(frame["text"]), max_length, params.entities.stride)
        owners = encoded["overflow_to_sample_mapping"]
        windows: dict[int, list[int]] = {}
        for window, owner in enumerate(owners):
            windows.setdefault(owner, []).append(window)
        labels: list[list[int]] = [[] for _ in owners]
        for owner, members in windows.items():
            ranges = word_ranges([(encoded["offset_mapping"][w], encoded.word_ids(w)) for w in members])
            tags = word_tags(spans[owner], ranges)
            for w in members:
                labels[w] = token_labels(encoded.word_ids(w), tags, index)
        inputs = {key: value for key, value in encoded.items() if key not in WINDOW_KEYS}
        return inputs, labels

    def collator(self, tokenizer: Any) -> Any:
        """Pads inputs and the per-token labels (with the ignored label)."""
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE)

    def fit_probe_head(self, train_x: np.ndarray, train: pd.DataFrame, val_x: np.ndarray, val: pd.DataFrame,
                       seed: int) -> Any:
        raise ConfigError(PROBE_REFUSAL)

    def loss_function(self, targets: list[Any], params: StageParams) -> None:
        """The token head's own cross-entropy over the labelled (first) sub-tokens."""
        return None

    def decision(self, targets: Any, scores: Any, vocabulary: list[str], params: StageParams) -> dict[str, Any]:
        """Argmax tag per word, words merged into spans (spans.decode_spans): no decision to choose."""
        return {}

    def metrics(self, targets: np.ndarray, output: np.ndarray, decision: dict[str, Any]) -> dict[str, float]:
        """Validation entity micro / macro F1 (seqeval, strict IOB2) and word accuracy over the windows' labelled
        sub-tokens (each word's first; a word in two overlapping windows counts in both): labels are tag ids per
        token, IGNORE elsewhere; output the logits (windows x tokens x tags); decision["labels"] the tags in
        order."""
        from seqeval.metrics import f1_score
        from seqeval.scheme import IOB2

        tags = list(decision["labels"])
        predicted = np.asarray(output).argmax(axis=-1)
        gold, guess = [], []
        for truth_row, guess_row in zip(np.asarray(targets), predicted, strict=True):
            keep = truth_row != IGNORE
            gold.append([tags[i] for i in truth_row[keep]])
            guess.append([tags[i] for i in guess_row[keep]])
        strict: dict[str, Any] = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
        words = sum(len(row) for row in gold)
        return {"entity_micro_f1": float(f1_score(gold, guess, average="micro", **strict)),
                "entity_macro_f1": float(f1_score(gold, guess, average="macro", **strict)),
                "word_accuracy": (sum(a == b for g, p in zip(gold, guess, strict=True)
                                      for a, b in zip(g, p, strict=True)) / words if words else 1.0)}

    def scores(self, logits: Any) -> Any:
        """The windows' tag probabilities as they come (modeling.forward_windows applies the softmax)."""
        return logits

    def decode(self, scores: Any, labels: Sequence[str], decision: dict[str, Any]) -> list[list[dict[str, Any]]]:
        """Each text's entities (type, start, end, the text there, score) from its windows (spans.decode_spans)."""
        return [decode_spans(output.text, output.windows, labels) for output in scores]

    def unchanged(self, answer: Any, before: str, after: str) -> Any | None:
        """The same entities where the perturbation kept their offsets and left the entities' own text alone but for
        its case: a case change of the same length (not 'ß' → 'SS'), a change only after the last entity (trailing
        punctuation), or a typo outside every entity (a typo inside one changes the entity: not judged)."""
        spans = as_spans(answer)
        if len(before) == len(after):
            if before.casefold() == after.casefold():
                return answer
            changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
            return None if any(s.start <= i < s.end for s in spans for i in changed) else answer
        last = max((s.end for s in spans), default=0)
        return answer if before[:last] == after[:last] else None

    def own_perturbations(self, texts: list[str], answers: list[Any], rows: np.ndarray, rng: np.random.Generator,
                          train: pd.DataFrame) -> dict[str, list[tuple[int, str, Any]]]:
        """swap: each entity the model found replaced by another string of its type from the training data; the
        moved entities are expected (CheckList's invariance: a name the model knows in one place it finds in
        another)."""
        pool = entity_pool(list(train["text"]), self.targets(train))
        cases = []
        for i in rows:
            swapped = swap_entities(texts[i], as_spans(answers[i]), pool, rng)
            if swapped is not None:
                cases.append((int(i), swapped[0], swapped[1]))
        return {"swap": cases}

    def answer_rows(self, answers: list[Any]) -> list[Any]:
        """Answers as a table stores them: entity rows (dicts)."""
        return [[span.row() if isinstance(span, Span) else dict(span) for span in answer] for answer in answers]

    def confidence(self, scores: Any, answers: list[Any]) -> np.ndarray:
        """Per text, the lowest score of its entities (1.0 where none was found: nothing to doubt)."""
        return np.array([min((float(e["score"]) for e in answer), default=1.0) for answer in answers])

    def answer_figures(self, actual: list[Any], predicted: list[Any],
                       labels: list[str]) -> tuple[dict[str, float], dict[str, Any]]:
        """Exact-match entity figures from the spans alone (no texts: what compression parity and ensembles
        compare): micro precision, recall and F1 (an entity counts when its start, end and type all match: seqeval's
        strict match on character spans) and macro-F1 over the types; per type precision, recall, F1, support."""
        micro = exact_scores(actual, predicted)
        figures = {f"entity_micro_{key}": micro[key] for key in ("precision", "recall", "f1")}
        per_type = {kind: exact_scores(of_type(actual, kind), of_type(predicted, kind))
                    for kind in sorted(set(self.frequencies(actual)) | set(self.frequencies(predicted)))}
        supported = [row["f1"] for row in per_type.values() if row["support"]]
        figures["entity_macro_f1"] = float(np.mean(supported)) if supported else 0.0
        return {key: round(float(value), 6) for key, value in figures.items()}, per_type

    def score_answers(self, actual: list[Any], predicted: list[Any], scores: Any, labels: list[str],
                      cfg: EvaluateConfig) -> Scored:
        """Entity figures (seqeval strict micro / macro P/R/F1, nervaluate's partial matches, word accuracy), the
        per-type table, and a type confusion table (each true entity against the answer's entity of the same
        span: its type, or (missed)) as the confusion plot."""
        texts = [output.text for output in scores]
        figures, per_type = self.figures(texts, [as_spans(a) for a in actual], [as_spans(p) for p in predicted])
        confusion = type_confusion(actual, predicted)
        empty = pd.DataFrame(columns=["label", "bin", "confidence", "accuracy", "rows"])
        pr = pd.DataFrame(columns=["label", "threshold", "precision", "recall"])
        return Scored(figures, per_type, {"confusion": confusion, "calibration": empty, "pr_curves": pr},
                      self.confidence(scores, predicted))

    def slice_scores(self, actual: list[Any], predicted: list[Any], labels: list[str]) -> dict[str, float]:
        """Entity micro-F1 of the slice (exact spans and types)."""
        counts = match_counts(actual, predicted)
        return {"entity_micro_f1": round(float(weighted_entity_f1(np.ones((1, len(counts))), counts)[0]), 6)
                if len(counts) else 0.0}

    def baseline(self, train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame) -> dict[str, float]:
        """The dictionary baseline (every training entity string found in the test texts; entity_scores)."""
        found = dictionary_baseline(list(train["text"]), self.targets(train), list(test["text"]))
        figures, _ = self.figures(list(test["text"]), self.targets(test), found)
        return {"method": "dictionary of training entity strings", "rows": len(test),
                **{key: figures[key] for key in ("entity_micro_f1", "entity_macro_f1", "partial_f1")}}

    def prediction_signals(self, scores: Any, labels: Sequence[str], decision: dict[str, Any]) -> pd.DataFrame:
        """entity_count (entities answered per text) and span_score (the mean score of a text's entities; 1.0 where
        it has none, as its confidence is)."""
        answers = self.decode(scores, labels, decision)
        return pd.DataFrame({"entity_count": [len(answer) for answer in answers],
                             "span_score": [float(np.mean([e["score"] for e in answer])) if answer else 1.0
                                            for answer in answers]})

    def columns(self, scores: Any, columns: list[int]) -> Any:
        """Each text's windows with their tag columns reordered."""
        out = np.empty(len(scores), dtype=object)
        for i, output in enumerate(scores):
            out[i] = TextWindows(output.text, [(offsets, words, np.asarray(probabilities, dtype=np.float64)[:, columns])
                                               for offsets, words, probabilities in output.windows])
        return out

    def average(self, outputs: Sequence[Any], weights: Sequence[float]) -> Any:
        """Soft voting before decoding: the weighted mean of the members' tag probabilities, token by token. Members
        must cut a text into the same tokens and windows (one tokenizer, max_length and stride): refused otherwise,
        naming the text."""
        from gradus.errors import ModelError

        out = np.empty(len(outputs[0]), dtype=object)
        for i, first in enumerate(outputs[0]):
            shapes = [[(list(map(tuple, offsets)), list(words)) for offsets, words, _ in member[i].windows]
                      for member in outputs]
            if any(shape != shapes[0] for shape in shapes[1:]):
                raise ModelError(f"ensemble members tokenize text {i} ({first.text[:40]!r}) differently; soft voting "
                                 "over tokens needs one tokenizer, train.max_length and entities.stride")
            windows = []
            for w, (offsets, words, _) in enumerate(first.windows):
                windows.append((offsets, words, weighted_mean([member[i].windows[w][2] for member in outputs],
                                                              weights)))
            out[i] = TextWindows(first.text, windows)
        return out

    def rank(self, scores: Any) -> np.ndarray:
        """No label ranking per text (entities are answered per span): an empty row per text."""
        return np.zeros((len(scores), 0), dtype=np.int64)

    def answer_json(self, scores: Any, ranked: np.ndarray, labels: Sequence[str], decision: dict[str, Any],
                    top_k: int, all_scores: bool) -> list[dict[str, Any]]:
        """{entities: [{type, start, end, text, score}]} per text, offsets into the text as sent."""
        return [{"entities": answer} for answer in self.decode(scores, labels, decision)]

    def logged(self, scores: Any, ranked: np.ndarray, labels: Sequence[str],
               decision: dict[str, Any]) -> tuple[list[Any], list[float]]:
        """The entities (type, start, end, text, score) and the lowest entity score (1.0 with none)."""
        answers = self.decode(scores, labels, decision)
        return answers, self.confidence(scores, answers).tolist()

    def v2_outputs(self, answers: list[dict[str, Any]], scores: Any, labels: Sequence[str]) -> list[dict]:
        """`entities` (BYTES [n]: each text's entities as a JSON array of {type, start, end, text, score})."""
        return [{"name": "entities", "datatype": "BYTES", "shape": [len(answers)],
                 "data": [json.dumps(a["entities"], ensure_ascii=False) for a in answers]}]

    def v2_parameters(self, labels: Sequence[str]) -> dict[str, Any]:
        """The entity types the model answers."""
        return {"entity_types": types_of(labels)}

    def v2_output_metadata(self) -> list[dict[str, Any]]:
        return [{"name": "entities", "datatype": "BYTES", "shape": [-1]}]

    def feedback_target(self, label: str | None, labels: list[str] | None,
                        entities: list[dict[str, Any]] | None = None) -> tuple[Any, str | None]:
        if entities is None:
            return None, ("give the right entities as `entities` (a list of {start, end, type}, [] for none): this "
                          "model answers entities per text")
        return [Span(int(e["start"]), int(e["end"]), str(e["type"])).row() for e in entities], None

    def target_problem(self, text: str, target: Any) -> str | None:
        """The span checks of the validate stage (inside the text, not empty; no overlaps)."""
        read = from_entities(text, target)
        if read.problem:
            return read.problem
        return resolve_overlaps(read.spans, "quarantine")[1]

    def answer_labels(self, vocabulary: Sequence[str]) -> list[str]:
        return types_of(vocabulary)

    def feedback_schema(self, labels: list[str]) -> dict[str, Any]:
        """`entities`: a list of {start, end, type} with the model's types (empty: the text has none)."""
        return {"required": ["entities"], "properties": {
            "entities": {"type": "array", "description": "the right entities", "items": {
                "type": "object", "required": ["start", "end", "type"],
                "properties": {"start": {"type": "integer", "minimum": 0}, "end": {"type": "integer", "minimum": 1},
                               "type": {"type": "string", "enum": types_of(labels)}}}},
            "label": {"type": "null"}, "labels": {"type": "null"}}}

    def counted(self, answer: Iterable[Span | dict[str, Any]]) -> list[str]:
        return [type_of(span) for span in answer]

    def frequencies(self, answers: Iterable[Iterable[Span | dict[str, Any]]]) -> Counter[str]:
        """How many entities of each type the answers hold (spans, or their rows as the splits store them)."""
        return Counter(type_of(span) for answer in answers if answer is not None for span in answer)

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
        info, checks = label_changes(types_of(champion.labels), types_of(challenger_labels), cfg)
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
                return exact_scores(of_type(actual, kind), of_type(answers, kind))["f1"]

            before, after = f1(old), f1(new)
            rows.append({"type": kind, "support": int(support[kind]), "f1_champion": round(before, 4),
                         "f1_challenger": round(after, 4), "drop": round(before - after, 4)})
        return sorted(rows, key=lambda row: -row["drop"])

    def figures(self, texts: Sequence[str], actual: Sequence[Sequence[Span]],
                predicted: Sequence[Sequence[Span]]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """The evaluation's figures (entity_scores.entity_figures)."""
        return entity_figures(texts, actual, predicted)


TASK = TokenClassification()
WINDOW_KEYS = ("offset_mapping", "overflow_to_sample_mapping")
PROBE_REFUSAL = ("train.method probe: the frozen-encoder probe reads one embedding per text, and entity extraction "
                 "labels tokens; use train.method finetune (lp_ft and auto fine-tune a new token head for entities)")


def tokenize_windows(tokenizer: Any, texts: list[str], max_length: int, stride: int, padding: bool = False) -> Any:
    """Each text's tokenization in windows of max_length tokens, consecutive windows sharing `stride` tokens, with
    character offsets and word ids (a fast tokenizer's BatchEncoding)."""
    from gradus.modeling import tokenizer_lock

    with tokenizer_lock():
        return tokenizer(texts, truncation=True, max_length=max_length, stride=min(stride, max_length // 2),
                         return_overflowing_tokens=True, return_offsets_mapping=True, padding=padding,
                         return_tensors="pt" if padding else None)


def type_confusion(actual: Sequence[Any], predicted: Sequence[Any]) -> pd.DataFrame:
    """Rows (actual, predicted), one per pair as DVC's confusion template counts them: each true entity against the
    answer's entity on the same characters (its type, or "(missed)"), and each answered entity on no true one as
    ("(none)", its type)."""
    pairs: list[tuple[str, str]] = []
    for gold, given in zip(actual, predicted, strict=True):
        gold_spans, given_spans = as_spans(gold), as_spans(given)
        by_place = {(s.start, s.end): s.type for s in given_spans}
        pairs += [(span.type, by_place.get((span.start, span.end), "(missed)")) for span in gold_spans]
        places = {(s.start, s.end) for s in gold_spans}
        pairs += [("(none)", span.type) for span in given_spans if (span.start, span.end) not in places]
    return pd.DataFrame(pairs, columns=["actual", "predicted"])


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
