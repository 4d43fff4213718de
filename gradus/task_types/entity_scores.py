"""The figures of entity extraction (the token_classification task type, being built): entity-level strict
precision, recall and F1 as seqeval computes them (micro, macro, per type), the partial-match figures as
nervaluate computes them (SemEval 2013: strict, exact boundaries, type, partial), and word accuracy.

Spans are character offsets into the text as written (gradus/spans.py). seqeval reads BIO tag sequences: each
text is cut into words as BERT-style tokenizers pre-tokenize (runs of word characters, and each other
non-space character alone) and every word is tagged by the span its characters overlap, for the truth and the
answer alike. nervaluate reads the spans themselves (its ends are inclusive: end - 1 is passed).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from gradus.spans import WORDS, Span, word_tags

PARTIAL_SCHEMES = ("strict", "exact", "ent_type", "partial")  # nervaluate's four ways to count a match


def word_tags_of(text: str, spans: Sequence[Span]) -> list[str]:
    """The IOB2 tag of each word of `text`: B- on the first word a span overlaps, I- on the next, else O (the
    rule training labels words by: spans.word_tags)."""
    ranges = {i: (match.start(), match.end()) for i, match in enumerate(WORDS.finditer(text))}
    tags = word_tags(spans, ranges)
    return [tags[i] for i in range(len(ranges))]


def entity_figures(texts: Sequence[str], truth: Sequence[Sequence[Span]],
                   predicted: Sequence[Sequence[Span]]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(headline figures, per type: precision, recall, F1, support) of answers against the truth, one row per text.
    Headline: entity micro / macro precision, recall and F1 (seqeval, strict IOB2), word accuracy, and nervaluate's
    micro F1 under each partial scheme (`partial_f1`, `exact_f1`, `type_f1`)."""
    from nervaluate import Evaluator
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    gold = [word_tags_of(text, spans) for text, spans in zip(texts, truth, strict=True)]
    guess = [word_tags_of(text, spans) for text, spans in zip(texts, predicted, strict=True)]
    strict: dict[str, Any] = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    words = sum(len(tags) for tags in gold)
    figures = {
        "entity_micro_precision": float(precision_score(gold, guess, average="micro", **strict)),
        "entity_micro_recall": float(recall_score(gold, guess, average="micro", **strict)),
        "entity_micro_f1": float(f1_score(gold, guess, average="micro", **strict)),
        "entity_macro_f1": float(f1_score(gold, guess, average="macro", **strict)),
        "word_accuracy": (sum(a == b for g, p in zip(gold, guess, strict=True) for a, b in zip(g, p, strict=True))
                          / words if words else 1.0),
    }
    report = classification_report(gold, guess, output_dict=True, **strict)
    per_type = {kind: {"precision": float(row["precision"]), "recall": float(row["recall"]),
                       "f1": float(row["f1-score"]), "support": int(row["support"])}
                for kind, row in report.items() if not kind.endswith(" avg")}
    types = sorted({span.type for spans in [*truth, *predicted] for span in spans})
    if types:
        def as_dicts(rows: Sequence[Sequence[Span]]) -> list[list[dict[str, Any]]]:
            return [[{"label": s.type, "start": s.start, "end": s.end - 1} for s in spans] for spans in rows]

        overall = Evaluator(as_dicts(truth), as_dicts(predicted), tags=types, loader="dict").evaluate()["overall"]
        figures |= {f"{'type' if scheme == 'ent_type' else scheme}_f1": float(overall[scheme].f1)
                    for scheme in PARTIAL_SCHEMES if scheme != "strict"}
    else:
        figures |= {"exact_f1": 1.0, "type_f1": 1.0, "partial_f1": 1.0}
    return {k: round(v, 6) for k, v in figures.items()}, per_type


def dictionary_baseline(train_texts: Sequence[str], train_spans: Sequence[Sequence[Span]],
                        texts: Sequence[str]) -> list[list[Span]]:
    """The cheap baseline a model must beat: every entity string of the training data (case-folded; its most
    frequent type there) found in each text at word boundaries, longest first, never overlapping."""
    from collections import Counter

    seen: dict[str, Counter[str]] = {}
    for text, spans in zip(train_texts, train_spans, strict=True):
        for span in spans:
            surface = text[span.start:span.end].casefold().strip()
            if surface:
                seen.setdefault(surface, Counter())[span.type] += 1
    if not seen:
        return [[] for _ in texts]
    types = {surface: counts.most_common(1)[0][0] for surface, counts in seen.items()}
    # One alternation, longest strings first, so the regex engine prefers the longest match at each position.
    pattern = re.compile(r"(?<!\w)(" + "|".join(re.escape(s) for s in sorted(types, key=len, reverse=True))
                         + r")(?!\w)")
    out = []
    for text in texts:
        folded = text.casefold()
        if len(folded) != len(text):  # case folding changed lengths (ß → ss): offsets would not map back
            folded = text.lower() if len(text.lower()) == len(text) else text
        out.append([Span(m.start(), m.end(), types[m.group(0)]) for m in pattern.finditer(folded)])
    return out
