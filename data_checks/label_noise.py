"""Likely mislabeled rows, from out-of-fold predictions of a cheap text model.

Great Expectations and its peers check values, not whether a label fits its text. Here each row is scored
by a TF-IDF + logistic-regression model that never saw it (k-fold); a row is flagged when that model is
confident in another label and gives the row's own label almost no probability. cleanlab's confident
learning (find_label_issues, per-class thresholds) was measured against this rule on the same out-of-fold
probabilities (benchmarks/label_noise.py) and flagged with far lower precision at every size, so the rule
stays; character n-grams for batches up to validate.label_noise.char_ngrams_max_rows lift its recall where
data is small.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import hstack
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from gradus.config.pipeline import LabelNoiseConfig
from gradus.spans import WORDS

CHAR_FEATURES = 20_000  # the most frequent character n-grams kept (benchmarks/label_noise.py)


@dataclass(frozen=True)
class NoiseFlags:
    """Per-row outcome, aligned with the input: flagged, the suggested label, the given label's probability."""

    flagged: pd.Series
    suggested: pd.Series
    label_probability: pd.Series


def text_features(texts: pd.Series, chars: bool) -> Any:
    """TF-IDF of words and word pairs; with `chars`, also of character 3-5-grams within words, which carry
    typos, inflections and rare words a small dataset sees too seldom as whole words."""
    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2).fit_transform(texts)
    if not chars:
        return words
    grams = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, min_df=2,
                            max_features=CHAR_FEATURES).fit_transform(texts)
    return hstack([words, grams]).tocsr()


def out_of_fold_probabilities(texts: pd.Series, labels: pd.Series, folds: int, seed: int = 0,
                              chars: bool = False) -> np.ndarray:
    """Class probabilities for every row from a model trained on the other folds (classes sorted)."""
    classes = np.array(sorted(labels.unique()))
    y = np.searchsorted(classes, labels.to_numpy())
    features = text_features(texts, chars)
    probabilities = np.zeros((len(texts), len(classes)))
    folds = min(folds, int(np.bincount(y).min()))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, y):
        # A capped number of saga passes: the flags need a ranking of labels, not a converged optimum
        # (30 with character n-grams: as good, measured, at a third of the time of 100).
        model = LogisticRegression(C=20.0, solver="saga", max_iter=30 if chars else 100, tol=1e-3,
                                   random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(features[train], y[train])
        probabilities[np.ix_(test, model.classes_)] = model.predict_proba(features[test])
    return probabilities


def confident_disagreements(probabilities: np.ndarray, given: np.ndarray,
                            cfg: LabelNoiseConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flagged, preferred class, probability of the given class) per row: flagged when the model prefers
    another class with at least min_confidence and gives the row's own at most max_label_probability."""
    best = probabilities.argmax(axis=1)
    given_p = probabilities[np.arange(len(given)), given]
    flagged = (best != given) & (probabilities.max(axis=1) >= cfg.min_confidence)
    return flagged & (given_p <= cfg.max_label_probability), best, given_p


def flag_label_noise(texts: pd.Series, labels: pd.Series, cfg: LabelNoiseConfig) -> NoiseFlags:
    """Flag rows whose label the out-of-fold model rejects with confidence."""
    classes = np.array(sorted(labels.unique()))
    probabilities = out_of_fold_probabilities(texts, labels, cfg.folds, chars=len(texts) <= cfg.char_ngrams_max_rows)
    flagged, best, given_p = confident_disagreements(
        probabilities, np.searchsorted(classes, labels.to_numpy()), cfg)
    return NoiseFlags(
        flagged=pd.Series(flagged, index=texts.index),
        suggested=pd.Series(classes[best], index=texts.index).where(flagged, ""),
        label_probability=pd.Series(given_p.round(4), index=texts.index),
    )


@dataclass(frozen=True)
class SetNoiseFlags:
    """Per-row outcome for label sets, aligned with the input: flagged, and the change suggested ("-label" to
    remove a given label the model rejects, "+label" to add one it is confident in), e.g. "-billing +refund"."""

    flagged: pd.Series
    suggested: pd.Series


def flag_label_set_noise(texts: pd.Series, label_sets: pd.Series, cfg: LabelNoiseConfig,
                         seed: int = 0) -> SetNoiseFlags:
    """Label sets the out-of-fold model disputes, one label at a time (one-vs-rest): a given label gets at most
    max_label_probability, or a label not given gets at least min_confidence. The same cheap features and
    thresholds as the single-label rule; folds are plain seeded k-fold (every label needs positives in the
    other folds: a label on fewer rows than folds is not judged)."""
    from sklearn.model_selection import KFold

    labels = sorted({label for labels in label_sets for label in labels})
    index = {label: i for i, label in enumerate(labels)}
    given = np.zeros((len(texts), len(labels)), dtype=bool)
    for row, labels_of_row in enumerate(label_sets):
        given[row, [index[label] for label in labels_of_row]] = True
    judged = given.sum(axis=0) >= cfg.folds
    features = text_features(texts, chars=len(texts) <= cfg.char_ngrams_max_rows)
    probabilities = np.full(given.shape, np.nan)
    for train, test in KFold(cfg.folds, shuffle=True, random_state=seed).split(features):
        for column in np.flatnonzero(judged):
            target = given[train, column]
            if target.all() or not target.any():
                continue
            model = LogisticRegression(C=20.0, solver="saga", max_iter=100, tol=1e-3, random_state=seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(features[train], target)
            probabilities[test, column] = model.predict_proba(features[test])[:, 1]
    remove = given & (probabilities <= cfg.max_label_probability)
    add = ~given & (probabilities >= cfg.min_confidence)
    suggested = [" ".join([*(f"-{labels[c]}" for c in np.flatnonzero(r)),
                           *(f"+{labels[c]}" for c in np.flatnonzero(a))])
                 for r, a in zip(remove, add, strict=True)]
    flagged = remove.any(axis=1) | add.any(axis=1)
    return SetNoiseFlags(flagged=pd.Series(flagged, index=texts.index),
                         suggested=pd.Series(suggested, index=texts.index))


def flag_rows(form: str, texts: pd.Series, targets: pd.Series, usable: pd.Series, vocabulary: list[str],
              cfg: LabelNoiseConfig) -> pd.DataFrame | None:
    """The label-noise columns (noise_flag, suggested_label, label_probability) for the rows of `texts` whose
    target can be judged, by the model for the target's form (a label: multinomial; a label set: one-vs-rest);
    None where there is too little (or, above label_noise.max_rows, too much) to judge. `usable`: rows whose text
    and target passed their checks' preconditions (a text, a target in the vocabulary)."""
    if form == "label":
        eligible = usable & targets.isin(vocabulary)
        counts = targets[eligible].value_counts()
        eligible &= targets.isin(counts[counts >= cfg.folds].index)  # k-fold needs k per class
        if targets[eligible].nunique() < 2 or eligible.sum() > cfg.max_rows:
            return None
        flags = flag_label_noise(texts[eligible], targets[eligible], cfg)
        return pd.DataFrame({"noise_flag": flags.flagged, "suggested_label": flags.suggested,
                             "label_probability": flags.label_probability})
    if form == "label_set":
        eligible = usable & targets.map(lambda labels: bool(labels) and set(labels) <= set(vocabulary))
        if not eligible.any() or eligible.sum() > cfg.max_rows:
            return None
        set_flags = flag_label_set_noise(texts[eligible], targets[eligible], cfg)
        return pd.DataFrame({"noise_flag": set_flags.flagged, "suggested_label": set_flags.suggested,
                             "label_probability": pd.NA}, index=texts[eligible].index)
    if form == "spans":
        eligible = usable & targets.map(lambda cell: cell is not None and all(e["type"] in vocabulary for e in cell))
        if eligible.sum() < cfg.folds or eligible.sum() > cfg.max_rows:
            return None
        span_flags = flag_span_noise(texts[eligible], targets[eligible], cfg)
        return pd.DataFrame({"noise_flag": span_flags.flagged, "suggested_label": span_flags.suggested,
                             "label_probability": pd.NA}, index=texts[eligible].index)
    raise ValueError(f"label noise: no model for targets of the form {form!r}")


OUTSIDE = "O"
SPAN_HASH_FEATURES = 2**18


def word_features(words: list[str], i: int) -> list[str]:
    """A word's features for the cheap tagger: itself, its affixes and shape, and its neighbours."""
    word = words[i]
    shape = re.sub(r"[A-Z]", "X", re.sub(r"[a-z]", "x", re.sub(r"\d", "d", word)))[:6]
    before = words[i - 1].lower() if i else "<s>"
    after = words[i + 1].lower() if i + 1 < len(words) else "</s>"
    return [f"w={word.lower()}", f"p3={word[:3].lower()}", f"s3={word[-3:].lower()}", f"shape={shape}",
            f"-1={before}", f"+1={after}", f"-1w={before}|{word.lower()}"]


def flag_span_noise(texts: pd.Series, entities: pd.Series, cfg: LabelNoiseConfig, seed: int = 0) -> SetNoiseFlags:
    """Entity spans an out-of-fold word tagger disputes: a cheap logistic regression over hashed word features
    (the word, its affixes and shape, its neighbours) gives each word a probability per entity type and `O`,
    trained on the other folds' texts. A given span is disputed when its words' mean probability of its type is at
    most max_label_probability and another class gets at least min_confidence ("-type 'surface'"); a run of words
    outside every span that the tagger gives one type with at least min_confidence is a missed entity
    ("+type 'surface'"). The same thresholds as for labels; seqeval-style words (runs of word characters)."""
    from sklearn.feature_extraction import FeatureHasher
    from sklearn.model_selection import KFold

    rows: list[tuple[int, int, int, str]] = []  # (text, word start, word end, given class)
    features: list[list[str]] = []
    for t, (text, cell) in enumerate(zip(texts, entities, strict=True)):
        matches = list(WORDS.finditer(text))
        words = [m.group() for m in matches]
        for i, match in enumerate(matches):
            given = next((e["type"] for e in cell if match.start() < e["end"] and e["start"] < match.end()), OUTSIDE)
            rows.append((t, match.start(), match.end(), given))
            features.append(word_features(words, i))
    classes = np.array(sorted({row[3] for row in rows}))
    if len(classes) < 2:
        return SetNoiseFlags(pd.Series(False, index=texts.index), pd.Series("", index=texts.index))
    x = FeatureHasher(SPAN_HASH_FEATURES, input_type="string", alternate_sign=False).transform(features)
    y = np.searchsorted(classes, [row[3] for row in rows])
    owner = np.array([row[0] for row in rows])
    probabilities = np.zeros((len(rows), len(classes)))
    for train, test in KFold(cfg.folds, shuffle=True, random_state=seed).split(np.arange(len(texts))):
        fit, score = np.isin(owner, train), np.isin(owner, test)
        model = LogisticRegression(C=10.0, solver="saga", max_iter=50, tol=1e-3, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x[fit], y[fit])
        probabilities[np.ix_(np.flatnonzero(score), model.classes_)] = model.predict_proba(x[score])
    outside = int(np.searchsorted(classes, OUTSIDE)) if OUTSIDE in classes else None
    suggestions: list[list[str]] = [[] for _ in range(len(texts))]
    by_text: dict[int, list[int]] = {}
    for k, row in enumerate(rows):
        by_text.setdefault(row[0], []).append(k)
    for t, members in by_text.items():
        text, cell = texts.iloc[t], entities.iloc[t]
        for e in cell:
            inside = [k for k in members if rows[k][1] < e["end"] and e["start"] < rows[k][2]]
            if not inside or e["type"] not in classes:
                continue
            mean = probabilities[inside].mean(axis=0)
            own = mean[np.searchsorted(classes, e["type"])]
            if own <= cfg.max_label_probability and mean.max() >= cfg.min_confidence:
                suggestions[t].append(f"-{e['type']} {text[e['start']:e['end']]!r}")
        run: list[int] = []
        for k in [*members, None]:
            best = None if k is None else int(probabilities[k].argmax())
            missed = (k is not None and rows[k][3] == OUTSIDE and best != outside
                      and probabilities[k, best] >= cfg.min_confidence
                      and (outside is None or probabilities[k, outside] <= cfg.max_label_probability))
            if run and (not missed or best != int(probabilities[run[-1]].argmax())):
                start, end = rows[run[0]][1], rows[run[-1]][2]
                suggestions[t].append(f"+{classes[int(probabilities[run[0]].argmax())]} {text[start:end]!r}")
                run = []
            if missed and k is not None:
                run.append(k)
    flagged = [bool(s) for s in suggestions]
    return SetNoiseFlags(flagged=pd.Series(flagged, index=texts.index),
                         suggested=pd.Series([" ".join(s) for s in suggestions], index=texts.index))
