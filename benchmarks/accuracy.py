"""Fine-tuning accuracy with the defaults of params.yaml, through the train stage's own code.

    python -m benchmarks.accuracy --dataset banking77|hwu64 [--set train.KEY=VALUE ...] [--tag NAME]

Trains on the dataset's train split (10 % held out, stratified, for model selection and early stopping) with
nothing but params.yaml's defaults (no benchmark-only settings; `--set` is for exploring and is recorded),
evaluates on its test split, and writes benchmarks/results/accuracy_<dataset>.json: test accuracy and
macro-F1 next to the TF-IDF + logistic-regression baseline and the frozen-encoder probe on the same split,
the epoch budget the defaults chose, why training stopped, every evaluation, wall time and throughput.

Targets (2 CPU cores, defaults only): Banking77 >= 93.5 % with training within 15 minutes, HWU64 >= 92 %,
each at least 2 points above its TF-IDF baseline and 1 point above the frozen-encoder probe.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from gradus.config.params import load_params
from gradus.modeling import load_classifier
from gradus.probe import probe_baseline
from tasks.evaluate import score, tfidf_baseline
from tasks.train import fine_tune

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data"
RESULTS = ROOT / "benchmarks" / "results"
# dataset -> (label column in its CSVs, minimum test accuracy, maximum training seconds or None)
DATASETS = {"banking77": ("category", 0.935, 900.0), "hwu64": ("label", 0.92, None)}
MIN_MARGIN_OVER_TFIDF = 0.02
MIN_MARGIN_OVER_PROBE = 0.01  # fine-tuning must earn its cost over the frozen-encoder probe


def read_split(dataset: str, split: str) -> tuple[pd.DataFrame, int]:
    """A split as text/label rows, and how many rows had no text (HWU64's source has 33 in train)."""
    frame = pd.read_csv(DATA / dataset / f"{split}.csv").rename(columns={DATASETS[dataset][0]: "label"})
    kept = frame[frame["text"].fillna("").str.strip() != ""]
    return kept[["text", "label"]].reset_index(drop=True), len(frame) - len(kept)


def hold_out_val(train: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fit, val): the train split minus a stratified, seeded 10 % held out for evaluation and early stopping."""
    fit, val = train_test_split(train, test_size=0.1, random_state=42, stratify=train["label"])
    return fit, val


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="banking77")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="override a train parameter (exploration only; recorded in the results)")
    parser.add_argument("--tag", default="",
                        help="write accuracy_<dataset>_<tag>.json (a variant's run) instead of the defaults' file")
    args = parser.parse_args()
    _, min_accuracy, max_train_s = DATASETS[args.dataset]
    (train, empty_train), (test, empty_test) = read_split(args.dataset, "train"), read_split(args.dataset, "test")
    fit, val = hold_out_val(train)
    with tempfile.TemporaryDirectory(prefix=f"gradus-{args.dataset}-") as work:
        params = load_params(ROOT / "params.yaml", [*args.overrides, f"paths.checkpoints={work}/checkpoints",
                                                    f"paths.training_log={work}/log"])
        started = time.perf_counter()
        summary = fine_tune(params, fit, val, Path(work) / "model")
        model = load_classifier(Path(work) / "model", max_length=params.train.max_length)
        predicted = model.predict(list(test["text"]), 128).labels()
        wall = time.perf_counter() - started
    result = score(list(test["label"]), predicted, list(model.labels))
    baseline = tfidf_baseline(fit, test)
    probe = probe_baseline(params.model.base, params.model.revision, fit, val, test, params.train.max_length,
                           params.evaluate.batch_size, summary["device"], params.train.seed)
    last = summary["evaluations"][-1] if summary["evaluations"] else None
    checks = {"accuracy": result["accuracy"] >= min_accuracy,
              "margin_over_tfidf": result["accuracy"] - baseline["accuracy"] >= MIN_MARGIN_OVER_TFIDF,
              "margin_over_probe": result["accuracy"] - probe["accuracy"] >= MIN_MARGIN_OVER_PROBE}
    if max_train_s:
        checks["training_time"] = summary["wall_time_s"] <= max_train_s
    output = {
        "benchmark": "accuracy", "dataset": args.dataset, "base_model": summary["base_model"],
        "device": summary["device"], "precision": summary["precision"],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "train_rows": len(fit), "val_rows": len(val), "test_rows": len(test), "labels": summary["num_labels"],
        "rows_without_text_skipped": {"train": empty_train, "test": empty_test},
        "overrides": args.overrides, "params": params.train.model_dump(),
        "test_accuracy": result["accuracy"], "test_macro_f1": result["macro_f1"],
        "baseline_tfidf": baseline,
        "margin_over_tfidf": round(result["accuracy"] - baseline["accuracy"], 6),
        "baseline_probe": probe, "margin_over_probe": round(result["accuracy"] - probe["accuracy"], 6),
        "training": {k: summary.get(k) for k in (
            "method", "head", "chosen", "epoch_rule", "epochs_planned", "epochs", "steps", "steps_per_epoch",
            "eval_steps", "best_epoch", "stop_reason", "wall_time_s", "samples_per_s", "tokens_per_s",
            "peak_memory_mib", "val_macro_f1", "probe", "finetuned_val_macro_f1")},
        "last_evaluation": last, "evaluations": summary["evaluations"],
        "wall_time_s_total": round(wall, 1),
        "targets": {"min_test_accuracy": min_accuracy, "min_margin_over_tfidf": MIN_MARGIN_OVER_TFIDF,
                    "min_margin_over_probe": MIN_MARGIN_OVER_PROBE,
                    "max_training_s": max_train_s},
        "checks": checks, "targets_met": all(checks.values()) and not args.overrides,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"accuracy_{args.dataset}{'_' + args.tag if args.tag else ''}.json"
    (RESULTS / name).write_text(json.dumps(output, indent=2) + "\n")
    print(json.dumps({k: v for k, v in output.items() if k not in ("evaluations", "params")}, indent=2))


if __name__ == "__main__":
    main()
