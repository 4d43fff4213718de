"""Drift monitor calibration on Banking77: how often does it flag same-distribution and shifted batches?

    python -m benchmarks.drift_calibration [--quick] [--samples 20]

Banking77 train is split (stratified, seeded) into a reference part (80 %, on which a champion is fine-tuned)
and a held-out part (20 %, never trained on). Then, with the monitor's own code and params.yaml's drift
settings, batches of 1,000 rows are judged:

  same        drawn from the held-out part (truly the reference's distribution)   -> flag at most 1 of 20
  domain_30   70 % held-out rows + 30 % sentences from another domain (software documentation) -> flag >= 19 of 20
  intents_10  held-out rows of all but 10 randomly chosen intents                 -> flag >= 19 of 20
  test        Banking77's official test split (a real, mild shift: uniform labels, shorter texts)

Writes benchmarks/results/drift_calibration.json with every batch's per-signal scores and decisions.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp
from sklearn.model_selection import train_test_split

from gradus.config.params import load_params
from gradus.modeling import load_classifier
from gradus.monitoring.drift import analyse
from tasks.train import fine_tune

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data" / "banking77"
RESULTS = ROOT / "benchmarks" / "results" / "drift_calibration.json"


def other_domain_sentences() -> list[str]:
    """First sentences of the standard library's documentation: English, but not about banking."""
    import collections
    import email
    import http.client
    import json as json_module
    import logging
    import os as os_module
    import pathlib
    import shutil
    import string
    import subprocess
    import textwrap
    import unittest
    import urllib.request
    import zipfile

    sentences = set()
    for module in (collections, email, http.client, json_module, logging, os_module, pathlib, shutil, string,
                   subprocess, textwrap, unittest, urllib.request, zipfile, inspect):
        for _, member in inspect.getmembers(module):
            doc = inspect.getdoc(member) if callable(member) else None
            first = doc.split("\n\n")[0].replace("\n", " ").strip() if doc else ""
            if 20 <= len(first) <= 200:
                sentences.add(first)
    return sorted(sentences)


def batches(held_out: pd.DataFrame, others: list[str], kind: str, n: int, rows: int, seed: int) -> list[pd.DataFrame]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if kind == "same":
            out.append(held_out.sample(rows, random_state=int(rng.integers(1 << 31))))
        elif kind == "domain_30":
            k = int(rows * 0.3)
            mixed = list(held_out.sample(rows - k, random_state=int(rng.integers(1 << 31)))["text"])
            mixed += list(rng.choice(others, k, replace=len(others) < k))
            out.append(pd.DataFrame({"text": mixed}))
        else:
            removed = set(rng.choice(sorted(held_out["label"].unique()), 10, replace=False))
            pool = held_out[~held_out["label"].isin(removed)]
            out.append(pool.sample(rows, random_state=int(rng.integers(1 << 31)), replace=len(pool) < rows))
    return [b.reset_index(drop=True) for b in out]


def judge(reference: pd.DataFrame, batch: pd.DataFrame, champion: Any, cfg: Any, out: Path) -> dict[str, Any]:
    started = time.perf_counter()
    analysis = analyse(reference, batch, champion, cfg, out)
    drifted = [name for name in cfg.signals if analysis["signals"][name]["drifted"]]
    return {"flagged": len(drifted) >= cfg.min_drifted_signals, "drifted": drifted,
            "scores": {k: v["score"] for k, v in analysis["signals"].items()},
            "seconds": round(time.perf_counter() - started, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 batches per kind, 1 training epoch")
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    n = 5 if args.quick else args.samples
    train = pd.read_csv(DATA / "train.csv").rename(columns={"category": "label"})
    test = pd.read_csv(DATA / "test.csv").rename(columns={"category": "label"})
    reference, held_out = train_test_split(train, test_size=0.2, random_state=7, stratify=train["label"])
    fit, val = train_test_split(reference, test_size=0.1, random_state=7, stratify=reference["label"])
    params = load_params(ROOT / "params.yaml")
    cfg = params.drift
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gradus-drift-cal-") as scratch:
        work = Path(scratch)
        run = load_params(ROOT / "params.yaml", [f"train.epochs={1 if args.quick else 2}", "train.eval_steps=100",
                                                 f"paths.checkpoints={work}/ckpt", f"paths.training_log={work}/log"])
        fine_tune(run, fit.reset_index(drop=True), val.reset_index(drop=True), work / "champion")
        champion = load_classifier(work / "champion", max_length=run.train.max_length)
        others = other_domain_sentences()
        results: dict[str, Any] = {}
        for kind, seed in (("same", 1), ("domain_30", 2), ("intents_10", 3)):
            judged = [judge(reference, batch, champion, cfg, work / f"{kind}-{i}")
                      for i, batch in enumerate(batches(held_out, others, kind, n, 1000, seed))]
            results[kind] = {"batches": n, "flagged": sum(j["flagged"] for j in judged), "runs": judged}
            print(kind, results[kind]["flagged"], "of", n)
        results["test"] = judge(reference, test, champion, cfg, work / "test")
    signals_test = results["test"]["scores"]
    length_p = float(ks_2samp(reference["text"].str.len(), test["text"].str.len()).pvalue)
    output = {
        "benchmark": "drift_calibration", "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "rows": {"reference": len(reference), "held_out": len(held_out), "batch": 1000, "test": len(test),
                 "other_domain_sentences": len(others)},
        "drift_params": cfg.model_dump(),
        "flag_rate": {kind: f"{results[kind]['flagged']} of {n}" for kind in ("same", "domain_30", "intents_10")},
        "targets_met": {"same_at_most_1_in_20": results["same"]["flagged"] <= max(1, n // 20),
                        "domain_30_at_least_19_in_20": results["domain_30"]["flagged"] >= n - max(1, n // 20),
                        "intents_10_at_least_19_in_20": results["intents_10"]["flagged"] >= n - max(1, n // 20)},
        "test_vs_train": {"flagged": results["test"]["flagged"], "drifted_signals": results["test"]["drifted"],
                          "scores": signals_test,
                          "ks_char_length_p": length_p},
        "mean_seconds_per_batch": round(float(np.mean([j["seconds"] for k in ("same", "domain_30", "intents_10")
                                                       for j in results[k]["runs"]])), 2),
        "wall_time_s": round(time.perf_counter() - started, 1),
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(output, indent=2, default=str) + "\n")
    print(json.dumps({k: output[k] for k in ("flag_rate", "targets_met", "test_vs_train", "wall_time_s")}, indent=2))


if __name__ == "__main__":
    main()
