"""Drift report speed: 50,000 reference rows vs 50,000 current rows, gradus's monitor next to Evidently's
out-of-the-box text drift, in one run.

    python -m benchmarks.drift_report [--quick]

gradus:   both Evidently reports of the monitor (text descriptors on every row, the champion's predicted
          labels, confidence and embeddings on seeded samples of drift.reference_model_rows / max_model_rows
          rows, computed in batches), HTML written.
baseline: Evidently's DataDriftPreset over the raw text column (its default text drift: a domain classifier
          on the texts) on the same rows, HTML written.

Texts are Banking77 train (reference) and test (current) rows resampled to size; the champion is the
packaged base model with a fresh 77-label head (a fine-tuned one costs the same). Target: gradus <= 60 s on
2 cores. `--quick`: 5,000 vs 5,000 rows. Writes benchmarks/results/drift_report.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import pandas as pd

from gradus.config.params import load_params
from gradus.modeling import load_classifier, resolve_base, save_label_map
from gradus.monitoring.drift import analyse

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data" / "banking77"
RESULTS = ROOT / "benchmarks" / "results" / "drift_report.json"


def champion_folder(folder: Path, labels: list[str]) -> None:
    """The packaged base model as a classifier (random head), saved as safetensors."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = resolve_base("packaged").location
    AutoModelForSequenceClassification.from_pretrained(base, num_labels=len(labels)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    save_label_map(folder, labels)


def evidently_baseline(reference: pd.DataFrame, current: pd.DataFrame, out: Path) -> float:
    """Evidently's default drift preset over the text column; returns seconds."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    started = time.perf_counter()
    definition = DataDefinition(text_columns=["text"])
    snapshot = Report([DataDriftPreset()]).run(Dataset.from_pandas(current[["text"]], data_definition=definition),
                                               Dataset.from_pandas(reference[["text"]], data_definition=definition))
    snapshot.save_html(str(out / "baseline.html"))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = 5_000 if args.quick else 50_000
    train = pd.read_csv(DATA / "train.csv").rename(columns={"category": "label"})
    test = pd.read_csv(DATA / "test.csv").rename(columns={"category": "label"})
    reference = train.sample(rows, replace=True, random_state=1).reset_index(drop=True)
    current = test.sample(rows, replace=True, random_state=2).reset_index(drop=True)
    cfg = load_params(ROOT / "params.yaml").drift
    with tempfile.TemporaryDirectory(prefix="gradus-drift-bench-") as scratch:
        work = Path(scratch)
        champion_folder(work / "champion", sorted(train["label"].unique()))
        load_started = time.perf_counter()
        champion = load_classifier(work / "champion", max_length=64)
        load_s = time.perf_counter() - load_started
        started = time.perf_counter()
        analysis = analyse(reference, current, champion, cfg, work / "gradus")
        gradus_s = time.perf_counter() - started
        baseline_s = evidently_baseline(reference, current, work)
    output = {
        "benchmark": "drift_report", "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "rows": {"reference": rows, "current": rows},
        "model_rows": analysis["model_sample"]["rows"], "sampled": analysis["model_sample"]["sampled"],
        "gradus_s": round(gradus_s, 2), "champion_load_s": round(load_s, 2),
        "evidently_text_preset_s": round(baseline_s, 2),
        "ratio_gradus_over_baseline": round(gradus_s / baseline_s, 3),
        "target": "gradus_s <= 60", "target_met": gradus_s <= 60,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "signals": {k: {"score": v["score"], "drifted": v["drifted"]} for k, v in analysis["signals"].items()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(output, indent=2) + "\n")
    print(json.dumps(output, indent=2))


if __name__ == "__main__":
    main()
