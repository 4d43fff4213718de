"""Evaluate stage: score the trained model on the test split against a TF-IDF baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, classification_report, f1_score

from gradus.config import Params
from gradus.io import write_json
from gradus.modeling import load_classifier, pick_device, predict_proba


def tfidf_baseline(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, float]:
    """A cheap bag-of-words baseline the fine-tuned model has to beat."""
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    model = LogisticRegression(max_iter=2000, C=10.0)
    model.fit(vectorizer.fit_transform(train["text"]), train["label"])
    predicted = model.predict(vectorizer.transform(test["text"]))
    return {"accuracy": round(float(accuracy_score(test["label"], predicted)), 6),
            "macro_f1": round(float(f1_score(test["label"], predicted, average="macro")), 6)}


def score(actual: list[str], predicted: list[str], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro and weighted F1, and the per-class report."""
    report = classification_report(actual, predicted, labels=labels, output_dict=True, zero_division=0)
    per_class = {label: {k: round(float(v), 6) for k, v in report[label].items()} for label in labels}
    return {
        "accuracy": round(float(accuracy_score(actual, predicted)), 6),
        "macro_f1": round(float(f1_score(actual, predicted, labels=labels, average="macro", zero_division=0)), 6),
        "weighted_f1": round(float(f1_score(actual, predicted, labels=labels, average="weighted",
                                            zero_division=0)), 6),
        "per_class": per_class,
    }


def run(params: Params) -> dict[str, Any]:
    """Write metrics.json (DVC metric), the per-class report and the confusion rows (DVC plot)."""
    splits = Path(params.paths.splits)
    train, test = (pd.read_parquet(splits / f"{name}.parquet") for name in ("train", "test"))
    model, tokenizer, labels = load_classifier(params.paths.model, pick_device(params.train.device))
    probabilities = predict_proba(model, tokenizer, list(test["text"]), params.evaluate.batch_size,
                                  params.train.max_length)
    predicted = [labels[i] for i in np.argmax(probabilities, axis=1)]
    actual = list(test["label"])
    result = score(actual, predicted, labels)
    majority = test["label"].value_counts(normalize=True).iloc[0] if len(test) else 0.0
    metrics = {
        "test_rows": len(test),
        "accuracy": result["accuracy"],
        "macro_f1": result["macro_f1"],
        "weighted_f1": result["weighted_f1"],
        "majority_class_accuracy": round(float(majority), 6),
        "baseline_tfidf": tfidf_baseline(train, test),
    }
    write_json(metrics, Path(params.paths.metrics))
    write_json(result["per_class"], Path(params.paths.per_class))
    confusion = Path(params.paths.confusion)
    confusion.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"actual": actual, "predicted": predicted}).to_csv(confusion, index=False)
    return {k: metrics[k] for k in ("accuracy", "macro_f1", "test_rows")}
