"""The multi-label task type's baselines on real data: GoEmotions (28 labels, Reddit comments, 1.17 labels per text).

    python -m benchmarks.multilabel_baselines [--train-rows N]

What a fine-tuned multi-label model will have to beat, scored with the type's own code (gradus/task_types/
multi_label.py): the frozen-encoder probe (the packaged base's pooled, normalised embeddings, one logistic
regression per label) and TF-IDF (word 1-2-grams, one logistic regression per label). For each, C is chosen on the
dataset's dev split by micro-F1, then the decision thresholds (global, and per label where a label has enough dev
positives: `choose_decision`'s rule) on the same dev split, and the test split is scored once: micro, macro and
samples F1, subset accuracy, Hamming loss, predicted vs true cardinality, with the 0.5-threshold figures beside to
show what choosing thresholds buys. Writes benchmarks/results/multilabel_baselines.json.

Published anchor (GoEmotions paper, Demszky et al. 2020): BERT-base fine-tuned, macro-F1 0.46 on test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.accuracy import DATA, RESULTS, ROOT
from gradus.config.params import load_params
from gradus.modeling import resolve_base
from gradus.probe import embed, pooling_mode
from gradus.task_types.multi_label import choose_decision, multi_hot, set_scores, thresholds_of

DATASET = DATA / "goemotions"
C_GRID = (0.25, 1.0, 4.0, 16.0, 64.0)
PUBLISHED_MACRO_F1 = 0.46  # the paper's BERT-base, test split


def read(split: str, labels: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    frame = pd.read_csv(DATASET / f"{split}.csv")
    return frame, multi_hot([cell.split("|") for cell in frame["labels"]], labels)


def one_vs_rest(train_x: Any, train_y: np.ndarray, dev_x: Any, dev_y: np.ndarray, seed: int) -> tuple[Any, float]:
    """One logistic regression per label; C the grid value with the best dev micro-F1 at 0.5."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    best: tuple[float, float, Any] | None = None
    for c in C_GRID:
        model = OneVsRestClassifier(LogisticRegression(C=c, max_iter=2000, random_state=seed), n_jobs=1)
        model.fit(train_x, train_y)
        micro = set_scores(dev_y, model.predict_proba(dev_x) >= 0.5)["micro_f1"]
        if best is None or micro > best[0]:
            best = (micro, c, model)
    assert best is not None
    return best[2], best[1]


def scored(name: str, model: Any, c: float, dev: tuple[Any, np.ndarray], test: tuple[Any, np.ndarray],
           labels: list[str], seconds: float) -> dict[str, Any]:
    decision = choose_decision(dev[1], model.predict_proba(dev[0]), labels)
    test_scores = model.predict_proba(test[0])
    chosen = set_scores(test[1], test_scores >= thresholds_of(decision, labels))
    at_half = set_scores(test[1], test_scores >= 0.5)
    print(f"{name}: test micro-F1 {chosen['micro_f1']:.4f}, macro-F1 {chosen['macro_f1']:.4f} "
          f"(at 0.5: {at_half['micro_f1']:.4f} / {at_half['macro_f1']:.4f}); C {c}, {seconds:.0f} s")
    return {"C": c, "test": {k: round(v, 4) for k, v in chosen.items()},
            "test_at_0.5": {k: round(v, 4) for k, v in at_half.items()},
            "global_threshold": decision["global"], "labels_with_own_threshold": len(decision["per_label"]),
            "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=None, help="a seeded sample of the train split")
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    labels = Path(DATASET / "labels.txt").read_text().split()
    (train, train_y), (dev, dev_y), (test, test_y) = (read(split, labels) for split in ("train", "dev", "test"))
    if args.train_rows:
        keep = np.random.default_rng(0).choice(len(train), size=args.train_rows, replace=False)
        train, train_y = train.iloc[keep].reset_index(drop=True), train_y[keep]
    seed = params.train.seed

    started = time.perf_counter()
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    train_x = vectorizer.fit_transform(train["text"])
    dev_x, test_x = vectorizer.transform(dev["text"]), vectorizer.transform(test["text"])
    model, c = one_vs_rest(train_x, train_y, dev_x, dev_y, seed)
    tfidf = scored("tfidf", model, c, (dev_x, dev_y), (test_x, test_y), labels, time.perf_counter() - started)

    started = time.perf_counter()
    base = resolve_base(params.model.base, params.model.revision)
    texts = [*train["text"], *dev["text"], *test["text"]]
    vectors = embed(base.location, texts, params.train.max_length, params.evaluate.batch_size, "cpu",
                    pooling_mode(Path(base.location)))
    embedding_seconds = time.perf_counter() - started
    train_v, dev_v, test_v = np.split(vectors, [len(train), len(train) + len(dev)])
    model, c = one_vs_rest(train_v, train_y, dev_v, dev_y, seed)
    probe = scored("probe", model, c, (dev_v, dev_y), (test_v, test_y), labels, time.perf_counter() - started)
    probe["embedding_seconds"] = round(embedding_seconds, 1)

    output = {"benchmark": "multilabel_baselines", "dataset": "goemotions",
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "rows": {"train": len(train), "dev": len(dev), "test": len(test)}, "labels": len(labels),
              "base_model": base.name, "tfidf": tfidf, "probe": probe,
              "published": {"macro_f1": PUBLISHED_MACRO_F1, "model": "BERT-base fine-tuned (Demszky et al. 2020)"}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "multilabel_baselines.json").write_text(json.dumps(output, indent=2) + "\n")


if __name__ == "__main__":
    main()
