"""Entity spans, the internal form of entity extraction (model.task token_classification, being built): a text and
its entities as character spans `(start, end, type)` into the text as written, end exclusive, sorted.

People hold entity data in three shapes, and each becomes that one form here:
- a text with its entities (what Label Studio, doccano and spaCy export): `{start, end, label}` objects (the type
  under `label`, `type` or `labels`, a list as Label Studio writes it; the surface text, where given, under `text`),
  or `[start, end, label]` lists (doccano, spaCy);
- tokens with BIO tags (`tokens` + `tags` in JSONL);
- CoNLL files: a token per line, its tag in the last column, a blank line between sentences.

Tokens become a text joined by single spaces, so the spans' offsets point into that text. Every problem is
returned as a reason naming the span and the fix (the validate stage quarantines the row with it), never raised
mid-batch: rows in = rows kept + rows quarantined.

Written by hand: seqeval reads BIO into entity tuples over token positions, not character offsets into a text,
and neither it nor nervaluate reads CoNLL files or the exporters' JSON; the checks are gradus's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradus.errors import DataError

BIO_CELL = "bio"  # the raw snapshot's label_type of a cell holding {tokens, tags} (a source of tokens with tags)
OVERLAP_POLICIES = ("quarantine", "keep_longest")
BIO_POLICIES = ("repair", "quarantine")


@dataclass(frozen=True, order=True)
class Span:
    start: int
    end: int
    type: str

    def row(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "type": self.type}

    def where(self) -> str:
        return f"{self.type} [{self.start}, {self.end})"


@dataclass(frozen=True)
class Read:
    """One row's spans as read, or why they cannot be read (`problem`), and the repairs made (counted)."""

    text: str
    spans: list[Span]
    problem: str | None = None
    repaired: int = 0


def entity(value: Any) -> tuple[Span | None, str | None, str | None]:
    """(span, surface text or None, None) from one exported entity, or (None, None, why it is not one)."""
    if isinstance(value, list | tuple) and len(value) >= 3:
        start, end, kind, surface = value[0], value[1], value[2], None
    elif isinstance(value, dict):
        start, end, surface = value.get("start"), value.get("end"), value.get("text")
        kind = next((value[key] for key in ("type", "label", "labels") if value.get(key) is not None), None)
        if isinstance(kind, list):  # Label Studio: "labels": ["PER"]
            kind = kind[0] if len(kind) == 1 else None
    else:
        return None, None, f"entity {str(value)[:60]} is neither an object with start/end/label nor [start, end, label]"
    if not isinstance(start, int) or not isinstance(end, int) or isinstance(start, bool) or isinstance(end, bool):
        return None, None, f"entity {str(value)[:60]}: start and end must be integers (character offsets)"
    if not isinstance(kind, str) or not kind.strip():
        return None, None, f"entity {str(value)[:60]}: one type is needed (label, type or a one-item labels list)"
    return Span(start, end, kind.strip()), surface if isinstance(surface, str) else None, None


def from_entities(text: str, entities: Iterable[Any]) -> Read:
    """A text with exported entities; a span outside the text, empty, or whose stored surface text differs from
    the text at its offsets is a problem (the first one found is named)."""
    spans: list[Span] = []
    for value in entities:
        span, surface, why = entity(value)
        if span is None:
            return Read(text, [], why)
        if not 0 <= span.start < span.end <= len(text):
            what = "empty" if span.start >= span.end else f"outside the text (length {len(text)})"
            return Read(text, [], f"span {span.where()} is {what}; offsets are characters into the text, end "
                                  "exclusive")
        if surface is not None and text[span.start:span.end] != surface:
            return Read(text, [], f"span {span.where()} says {surface!r} but the text there is "
                                  f"{text[span.start:span.end]!r} (offsets shifted, or counted in other units)")
        spans.append(span)
    return Read(text, sorted(set(spans)))


def from_bio(tokens: Sequence[str], tags: Sequence[str], policy: str = "repair") -> Read:
    """Tokens joined by single spaces, the spans their BIO tags mark (`B-x` begins, `I-x` continues, `O` is
    outside; IOB1's `I-x` after `O` or after another type begins a span when `policy` is repair, counted, and
    makes the row a problem when it is quarantine)."""
    if len(tokens) != len(tags):
        return Read(" ".join(map(str, tokens)), [], f"{len(tokens)} tokens but {len(tags)} tags (one tag per token)")
    starts, position = [], 0
    for token in tokens:
        starts.append(position)
        position += len(token) + 1
    text = " ".join(tokens)
    spans: list[Span] = []
    open_span: tuple[int, int, str] | None = None  # (start, end, type)
    repaired = 0
    for i, (token, tag) in enumerate(zip(tokens, tags, strict=True)):
        prefix, _, kind = str(tag).partition("-")
        if tag == "O" or prefix not in ("B", "I") or not kind:
            if tag != "O":
                return Read(text, [], f"token {i} ({token!r}) has tag {tag!r}: tags are O, B-<type> or I-<type>")
            if open_span:
                spans.append(Span(*open_span))
            open_span = None
            continue
        if prefix == "I" and open_span is not None and open_span[2] == kind:
            open_span = (open_span[0], starts[i] + len(token), kind)
            continue
        if prefix == "I":  # an I- without its B-
            if policy == "quarantine":
                return Read(text, [], f"token {i} ({token!r}) is tagged {tag} without a B-{kind} before it "
                                      "(entities.invalid_bio: repair to start a span there)")
            repaired += 1
        if open_span:
            spans.append(Span(*open_span))
        open_span = (starts[i], starts[i] + len(token), kind)
    if open_span:
        spans.append(Span(*open_span))
    return Read(text, spans, repaired=repaired)


def read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    """The sentences of a CoNLL file: (tokens, tags), the token in the first column and the tag in the last;
    `-DOCSTART-` lines are skipped. A line with one column is refused naming the file and line."""
    sentences: list[tuple[list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        columns = line.split()
        if not columns or columns[0] == "-DOCSTART-":
            if tokens:
                sentences.append((tokens, tags))
            tokens, tags = [], []
            continue
        if len(columns) < 2:
            raise DataError(f"{path}:{number}: {line.strip()!r} has no tag column; CoNLL lines are 'token ... tag' "
                            "with a blank line between sentences")
        tokens.append(columns[0])
        tags.append(columns[-1])
    if tokens:
        sentences.append((tokens, tags))
    return sentences


def overlaps(spans: Sequence[Span]) -> list[tuple[Span, Span]]:
    """Pairs of spans that share a character (nested spans included), in order."""
    ordered = sorted(spans)
    return [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:] if b.start < a.end]


def resolve_overlaps(spans: Sequence[Span], policy: str) -> tuple[list[Span], str | None, int]:
    """(spans kept, the reason the row is quarantined or None, spans dropped). `keep_longest` keeps the longest of
    overlapping spans (the earlier on a tie) and drops the rest, counted."""
    clashes = overlaps(spans)
    if not clashes:
        return sorted(spans), None, 0
    if policy == "quarantine":
        a, b = clashes[0]
        return [], (f"spans {a.where()} and {b.where()} overlap (entities.overlaps: keep_longest to keep the "
                    "longer)"), 0
    kept: list[Span] = []
    for span in sorted(spans, key=lambda s: (-(s.end - s.start), s.start)):
        if all(span.end <= other.start or other.end <= span.start for other in kept):
            kept.append(span)
    return sorted(kept), None, len(spans) - len(kept)


def unknown_types(spans: Iterable[Span], allowed: Iterable[str]) -> list[str]:
    """The spans' types outside the allow-list, sorted."""
    known = set(allowed)
    return sorted({span.type for span in spans} - known)


# ---------------------------------------------------------------------------------------- sub-word tokens
# A fast tokenizer's encoding of a text gives, per token, its character offsets and the word it belongs to
# (`word_ids`; None for special tokens). Long texts come as several overlapping windows (return_overflowing_tokens
# with a stride), whose word ids still count the text's words. Training labels each word's first sub-token with
# the word's BIO tag and ignores the rest; decoding reads each word's tag from its first sub-token, averaged over
# the windows that hold it, and merges tagged words into spans.

IGNORE = -100  # the label a token's loss skips (transformers' convention)
# Words as BERT-style tokenizers pre-tokenize a text (runs of word characters, each other non-space character alone):
# what the figures tag and the label-noise tagger reads when no tokenizer is at hand.
WORDS = re.compile(r"\w+|[^\w\s]")


def tag_vocabulary(types: Iterable[str]) -> list[str]:
    """O, then B- and I- of each entity type, types sorted: a token-classification head's labels, in order."""
    return ["O", *(f"{prefix}-{kind}" for kind in sorted(set(types)) for prefix in ("B", "I"))]


Offsets = Sequence[tuple[int, int]]
WordIds = Sequence[int | None]


@dataclass(frozen=True)
class TextWindows:
    """A token-classification model's raw output for one text: the text and, per window of its tokenization, the
    tokens' character offsets, their word ids and their tag probabilities (tokens x tags)."""

    text: str
    windows: list[tuple[Offsets, WordIds, Any]]


def word_ranges(windows: Sequence[tuple[Offsets, WordIds]]) -> dict[int, tuple[int, int]]:
    """Each word's character range in the text, from its tokens' offsets across every window."""
    ranges: dict[int, tuple[int, int]] = {}
    for offsets, words in windows:
        for (start, end), word in zip(offsets, words, strict=True):
            if word is None:
                continue
            low, high = ranges.get(word, (start, end))
            ranges[word] = (min(low, start), max(high, end))
    return ranges


def word_tags(spans: Sequence[Span], ranges: dict[int, tuple[int, int]]) -> dict[int, str]:
    """Each word's BIO tag: the first span its characters overlap (B- on its first word, I- after), else O."""
    tags: dict[int, str] = {}
    begun: set[Span] = set()
    for word, (start, end) in sorted(ranges.items(), key=lambda item: item[1]):
        span = next((s for s in spans if start < s.end and s.start < end), None)
        if span is None:
            tags[word] = "O"
        else:
            tags[word] = f"{'I' if span in begun else 'B'}-{span.type}"
            begun.add(span)
    return tags


def token_labels(words: WordIds, tags: dict[int, str], index: dict[str, int]) -> list[int]:
    """One window's training labels: each word's tag id on its first sub-token in the window, IGNORE elsewhere."""
    labels, seen = [], set()
    for word in words:
        if word is None or word in seen:
            labels.append(IGNORE)
        else:
            seen.add(word)
            labels.append(index[tags[word]])
    return labels


def decode_spans(text: str, windows: Sequence[tuple[Offsets, WordIds, Any]],
                 vocabulary: Sequence[str]) -> list[dict[str, Any]]:
    """Entities from per-token probabilities (rows of `windows`' third item, columns in `vocabulary`'s order):
    a word's probabilities are its first sub-token's, averaged over the windows holding it; its tag is their
    argmax; consecutive words tagged B-x I-x ... form one span (an I-x after O or another type begins one); a
    span's score is the mean of its words' tag probabilities; its end runs on over characters no token covers
    (a combining accent the tokenizer's normaliser dropped), so the span is the text as written."""
    import numpy as np

    ranges = word_ranges([(offsets, words) for offsets, words, _ in windows])
    totals: dict[int, Any] = {}
    counts: dict[int, int] = {}
    for _offsets, words, probabilities in windows:
        seen: set[int] = set()
        for position, word in enumerate(words):
            if word is None or word in seen:
                continue
            seen.add(word)
            totals[word] = totals.get(word, 0) + np.asarray(probabilities[position], dtype=np.float64)
            counts[word] = counts.get(word, 0) + 1
    covered = {i for start, end in ranges.values() for i in range(start, end)}
    entities: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for word in sorted(totals, key=lambda w: ranges[w]):
        mean = totals[word] / counts[word]
        best = int(mean.argmax())
        prefix, _, kind = vocabulary[best].partition("-")
        start, end = ranges[word]
        if prefix == "I" and current is not None and current["type"] == kind:
            current["end"], current["scores"] = end, [*current["scores"], float(mean[best])]
            continue
        if current is not None:
            entities.append(current)
        current = {"type": kind, "start": start, "end": end, "scores": [float(mean[best])]} if kind else None
    if current is not None:
        entities.append(current)
    out = []
    for found in entities:
        end = found["end"]
        while end < len(text) and end not in covered and not text[end].isspace():
            end += 1
        out.append({"type": found["type"], "start": found["start"], "end": end, "text": text[found["start"]:end],
                    "score": round(sum(found["scores"]) / len(found["scores"]), 6)})
    return out
