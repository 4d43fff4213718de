"""Validation + quarantine throughput on Banking77 texts resampled to 1,000,000 rows with injected faults.

    python -m benchmarks.validate_throughput [--quick] [--rows N]

Side by side, on the same rows, each in its own process (so peak memory is its own):
  baseline  bare Great Expectations: the five basic expectations (text/label null and blank, length),
            no derived checks, no quarantine
  gradus    the validate stage's work: derived columns (normalised keys, token bounds, duplicates,
            conflicts, PII), the full GX suite, quarantine with reasons, Data Docs (the label-noise
            model is measured on its own by benchmarks/label_noise.py)
Writes benchmarks/results/validate_throughput.json (rows/s, seconds, peak RSS, and gradus/baseline ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BANKING77 = ROOT / "benchmarks" / "data" / "banking77" / "train.csv"
RESULTS = ROOT / "benchmarks" / "results" / "validate_throughput.json"
FILLERS = ("please", "thanks", "asap", "today", "urgent", "again", "now", "help", "hello", "team", "sorry",
           "quickly", "kindly", "still", "really", "why", "how", "when", "ok", "hi")


def make_rows(n: int, seed: int = 0) -> tuple[pd.DataFrame, dict[str, int]]:
    """Resampled Banking77 rows, made mostly distinct with filler words, with faults injected."""
    base = pd.read_csv(BANKING77).rename(columns={"category": "label"})
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(base), n)
    words = np.array(FILLERS)
    suffix = [" ".join(w) for w in words[rng.integers(0, len(words), (n, 3))]]
    frame = pd.DataFrame({"text": base["text"].to_numpy()[picks] + " " + np.array(suffix, dtype=object),
                          "label": base["label"].to_numpy()[picks]}).astype(object)
    faults = {"blank_text": "   ", "null_text": None, "control_chars": "card \x07 stuck", "long_text": "x" * 3000,
              "unknown_label": None, "null_label": None, "email": None}
    positions = rng.permutation(n)[: 7 * max(1, n // 1000)].reshape(7, -1)
    for (name, value), rows in zip(faults.items(), positions, strict=True):
        if name == "unknown_label":
            frame.loc[rows, "label"] = "not_an_intent"
        elif name == "null_label":
            frame.loc[rows, "label"] = None
        elif name == "email":
            frame.loc[rows, "text"] = frame.loc[rows, "text"] + " write to me@example.com"
        else:
            frame.loc[rows, "text"] = value
    frame["source"] = "benchmark"
    frame["source_row"] = np.arange(n)
    return frame, {name: len(rows) for name, rows in zip(faults, positions, strict=True)}


def child(variant: str, rows: int) -> dict[str, object]:
    """Run one variant in this process; report its own wall time and peak memory."""
    frame, faults = make_rows(rows)
    start = time.perf_counter()
    if variant == "baseline":
        from data_checks.suite import default_label_rules, row_checks, run_suite
        from gradus.config.pipeline import ValidateConfig

        basic = [c for c in row_checks(ValidateConfig(), default_label_rules([])) if c.name in {
            "text_not_null", "text_not_blank", "text_length", "label_not_null", "label_not_blank"}]
        result = run_suite(frame, basic)
        kept = len(frame) - len({i for rows_ in result.failures.values() for i in rows_})
        quarantined = len(frame) - kept
    else:
        from gradus.config.params import load_params
        from tasks.validate import validate_frame

        # The label-noise check is a model fit, not validation: benchmarks/label_noise.py measures it.
        params = load_params(ROOT / "params.yaml", ["validate.label_noise.enabled=false"])
        with tempfile.TemporaryDirectory() as docs:
            kept_frame, quarantined_frame, _ = validate_frame(frame, params, Path(docs) / "data_docs")
        kept, quarantined = len(kept_frame), len(quarantined_frame)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": variant, "rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds),
            "peak_rss_mib": round(peak_mib, 1), "kept": kept, "quarantined": quarantined, "faults": faults}


def run_variant(variant: str, rows: int) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-m", "benchmarks.validate_throughput", "--child", variant,
                           "--rows", str(rows)], cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 rows (finishes well within 60 s)")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--child", choices=["baseline", "gradus"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    if args.child:
        print(json.dumps(child(args.child, rows)))
        return
    baseline, gradus = run_variant("baseline", rows), run_variant("gradus", rows)
    result = {
        "benchmark": "validate_throughput", "rows": rows, "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "baseline": baseline, "gradus": gradus,
        "ratio_gradus_over_baseline_seconds": round(gradus["seconds"] / baseline["seconds"], 2),
        "target": "1,000,000 rows validated and quarantined in at most 30 s on 2 cores",
        "target_met": rows < 1_000_000 or gradus["seconds"] <= 30.0,
        "label_noise_check": "disabled here; measured by benchmarks/label_noise.py",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
