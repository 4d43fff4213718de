"""Entity spans read from the shapes people export (gradus/spans.py): offsets into the text as written, and every
problem named with its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradus.errors import DataError
from gradus.spans import Span, from_bio, from_entities, read_conll, resolve_overlaps, unknown_types
from tests.conftest import ROOT

SLOTS = ROOT / "benchmarks" / "data" / "hwu64-slots"


def surfaces(read) -> list[tuple[str, str]]:
    return [(read.text[s.start:s.end], s.type) for s in read.spans]


def test_exported_entities_of_each_tool_become_the_same_spans() -> None:
    text = "wake me at seven am tomorrow"
    ours = from_entities(text, [{"start": 11, "end": 19, "label": "time"}, {"start": 20, "end": 28, "label": "date"}])
    studio = from_entities(text, [{"start": 20, "end": 28, "text": "tomorrow", "labels": ["date"]},
                                  {"start": 11, "end": 19, "text": "seven am", "labels": ["time"]}])
    doccano = from_entities(text, [[11, 19, "time"], [20, 28, "date"]])
    assert ours.spans == studio.spans == doccano.spans == [Span(11, 19, "time"), Span(20, 28, "date")]
    assert surfaces(ours) == [("seven am", "time"), ("tomorrow", "date")] and ours.problem is None


def test_offsets_count_characters_as_written_emoji_and_combining_marks_included() -> None:
    text = "pay Jose\u0301 💳 4242 on 3 May"  # a combining accent (2 code points) and an astral emoji
    start = text.index("4242")
    read = from_entities(text, [{"start": 4, "end": 9, "text": "Jose\u0301", "label": "person"},
                                {"start": start, "end": start + 4, "text": "4242", "label": "card_ending"}])
    assert read.problem is None and surfaces(read) == [("Jose\u0301", "person"), ("4242", "card_ending")]
    # Offsets counted in UTF-16 units (as a browser counts them) land one character late after the emoji.
    shifted = from_entities(text, [{"start": start + 1, "end": start + 5, "text": "4242", "label": "card_ending"}])
    assert "says '4242' but the text there is '242 '" in shifted.problem and "other units" in shifted.problem


@pytest.mark.parametrize(("entities", "words"), [
    ([{"start": 3, "end": 40, "label": "date"}], "outside the text (length 28)"),
    ([{"start": 5, "end": 5, "label": "date"}], "date [5, 5) is empty"),
    ([{"start": "3", "end": 9, "label": "date"}], "start and end must be integers"),
    ([{"start": 3, "end": 9}], "one type is needed"),
    ([{"start": 3, "end": 9, "labels": ["date", "time"]}], "one type is needed"),
    (["date"], "neither an object with start/end/label nor [start, end, label]"),
])
def test_a_bad_span_is_named_with_the_fix(entities: list, words: str) -> None:
    read = from_entities("wake me at seven am tomorrow", entities)
    assert read.spans == [] and words in read.problem


def test_bio_tags_become_spans_into_the_joined_tokens() -> None:
    read = from_bio(["book", "a", "table", "at", "pizza", "hut", "for", "two"],
                    ["O", "O", "O", "O", "B-business_name", "I-business_name", "O", "B-count"])
    assert read.text == "book a table at pizza hut for two" and read.problem is None and read.repaired == 0
    assert surfaces(read) == [("pizza hut", "business_name"), ("two", "count")]
    adjacent = from_bio(["paris", "london"], ["B-place", "B-place"])  # two entities, not one
    assert surfaces(adjacent) == [("paris", "place"), ("london", "place")]


def test_an_inside_tag_without_its_begin_is_repaired_or_quarantined_by_setting() -> None:
    tokens, tags = ["fly", "to", "new", "york", "today"], ["O", "O", "I-place", "I-place", "I-date"]
    repaired = from_bio(tokens, tags, "repair")
    assert surfaces(repaired) == [("new york", "place"), ("today", "date")] and repaired.repaired == 2
    strict = from_bio(tokens, tags, "quarantine")
    assert strict.spans == [] and "token 2 ('new') is tagged I-place without a B-place" in strict.problem
    assert "invalid_bio: repair" in strict.problem


def test_tokens_and_tags_of_different_lengths_or_unknown_tags_are_refused() -> None:
    assert "3 tokens but 2 tags" in from_bio(["a", "b", "c"], ["O", "O"]).problem
    assert "tag 'PER'" in from_bio(["ann"], ["PER"]).problem


def test_conll_files_read_sentence_by_sentence(tmp_path: Path) -> None:
    path = tmp_path / "train.conll"
    path.write_text("-DOCSTART- -X- O O\n\nJohn NNP B-PER\nlives VBZ O\nin IN O\nNew NNP B-LOC\nYork NNP I-LOC\n\n"
                    "Hi UH O\n", encoding="utf-8")
    sentences = read_conll(path)
    assert [tokens for tokens, _ in sentences] == [["John", "lives", "in", "New", "York"], ["Hi"]]
    assert surfaces(from_bio(*sentences[0])) == [("John", "PER"), ("New York", "LOC")]
    path.write_text("John B-PER\nlives\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train.conll:2: 'lives' has no tag column"):
        read_conll(path)


def test_overlapping_spans_are_quarantined_or_the_longest_kept() -> None:
    spans = [Span(0, 8, "city"), Span(0, 17, "place"), Span(9, 17, "state"), Span(20, 24, "date")]
    kept, why, dropped = resolve_overlaps(spans, "quarantine")
    assert kept == [] and "spans city [0, 8) and place [0, 17) overlap" in why and "keep_longest" in why
    kept, why, dropped = resolve_overlaps(spans, "keep_longest")
    assert why is None and kept == [Span(0, 17, "place"), Span(20, 24, "date")] and dropped == 2
    assert resolve_overlaps([Span(0, 3, "a"), Span(3, 5, "b")], "quarantine") == (
        [Span(0, 3, "a"), Span(3, 5, "b")], None, 0)  # touching is not overlapping (end exclusive)
    assert unknown_types(spans, ["city", "place", "state"]) == ["date"]


def test_every_vendored_hwu64_slots_row_reads_as_spans() -> None:
    total = 0
    for name in ("train", "test"):
        for line in (SLOTS / f"{name}.jsonl").read_text().splitlines():
            row = json.loads(line)
            read = from_entities(row["text"], row["entities"])
            assert read.problem is None, (row, read.problem)
            assert all(read.text[s.start:s.end].strip() == read.text[s.start:s.end] for s in read.spans), row
            total += len(read.spans)
    assert total == 8253 + 880  # every entity of the note's counts, none merged or lost


# Sub-word tokens: the packaged model's own tokenizer (WordPiece, lower-casing, accents stripped).
TEXT = "pay Jose\u0301 💳 4242 on 3 May to mcdonald's"
SPANS = [Span(4, 9, "person"), Span(12, 16, "card_ending"), Span(20, 25, "date"), Span(29, 39, "merchant")]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from gradus.modeling import PACKAGED, resolve_base

    return AutoTokenizer.from_pretrained(resolve_base(PACKAGED).location)


def windows_of(tokenizer, text: str, max_length: int = 128, stride: int = 0) -> list:
    encoding = tokenizer(text, return_offsets_mapping=True, return_overflowing_tokens=True, truncation=True,
                         max_length=max_length, stride=stride)
    return [(encoding["offset_mapping"][i], encoding.word_ids(i)) for i in range(len(encoding["input_ids"]))]


def test_each_words_first_sub_token_carries_its_tag_and_the_rest_are_ignored(tokenizer) -> None:
    from gradus.spans import IGNORE, tag_vocabulary, token_labels, word_ranges, word_tags

    vocabulary = tag_vocabulary(s.type for s in SPANS)
    index = {tag: i for i, tag in enumerate(vocabulary)}
    [(offsets, words)] = windows_of(tokenizer, TEXT)
    labels = token_labels(words, word_tags(SPANS, word_ranges([(offsets, words)])), index)
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(TEXT)["input_ids"])
    tagged = [(token, vocabulary[label] if label != IGNORE else None) for token, label in zip(tokens, labels,
                                                                                             strict=True)]
    assert tagged == [("[CLS]", None), ("pay", "O"), ("jose", "B-person"), ("[UNK]", "O"), ("42", "B-card_ending"),
                      ("##42", None), ("on", "O"), ("3", "B-date"), ("may", "I-date"), ("to", "O"),
                      ("mcdonald", "B-merchant"), ("'", "I-merchant"), ("s", "I-merchant"), ("[SEP]", None)]


def one_hot_windows(tokenizer, text: str, spans: list[Span], vocabulary: list[str], **window) -> list:
    """Each window with probabilities that put all mass on the right tag (a perfect model's output)."""
    import numpy as np

    from gradus.spans import IGNORE, token_labels, word_ranges, word_tags

    index = {tag: i for i, tag in enumerate(vocabulary)}
    windows = windows_of(tokenizer, text, **window)
    tags = word_tags(spans, word_ranges(windows))
    out = []
    for offsets, words in windows:
        labels = token_labels(words, tags, index)
        probabilities = np.full((len(words), len(vocabulary)), 0.01)
        for position, label in enumerate(labels):
            if label != IGNORE:
                probabilities[position, label] = 0.9
        out.append((offsets, words, probabilities))
    return out


def test_decoding_merges_words_into_spans_of_the_text_as_written(tokenizer) -> None:
    from gradus.spans import decode_spans, tag_vocabulary

    vocabulary = tag_vocabulary(s.type for s in SPANS)
    found = decode_spans(TEXT, one_hot_windows(tokenizer, TEXT, SPANS, vocabulary), vocabulary)
    assert [(f["type"], f["start"], f["end"], f["text"]) for f in found] == [
        (s.type, s.start, s.end, TEXT[s.start:s.end]) for s in SPANS]
    assert found[0]["text"] == "Jose\u0301"  # the accent the tokenizer dropped is part of the answer
    assert all(f["score"] == pytest.approx(0.9) for f in found)


def test_long_texts_are_labelled_and_decoded_in_overlapping_windows(tokenizer) -> None:
    from gradus.spans import decode_spans, tag_vocabulary

    text = " ".join(f"remind me on day {i} at noon" if i % 3 else f"call anna {i} times" for i in range(40))
    spans = [Span(m, m + 4, "person") for m in range(len(text)) if text.startswith("anna", m)]
    spans += [Span(m, m + 4, "time") for m in range(len(text)) if text.startswith("noon", m)]
    vocabulary = tag_vocabulary(["person", "time"])
    windows = one_hot_windows(tokenizer, text, spans, vocabulary, max_length=32, stride=8)
    assert len(windows) > 5  # the text is far longer than one window
    found = decode_spans(text, windows, vocabulary)
    assert [(f["type"], f["start"], f["end"]) for f in found] == [(s.type, s.start, s.end) for s in sorted(
        spans, key=lambda s: s.start)]
