"""The frozen-encoder probe (gradus/probe.py, what the evaluate stage reports as `baseline_probe`) on real
intent data, beside the TF-IDF baseline (the evaluate stage's other baseline), in one run.

    python -m benchmarks.probe [--dataset banking77|hwu64 ...]

The same splits as benchmarks.accuracy: the dataset's train split minus a stratified, seeded 10 % held out
(where the probe chooses its C), and its test split. Writes benchmarks/results/probe.json: per dataset, the
probe's test accuracy and macro-F1, the C it kept, its pooling and cost (embedding every split, then the fits),
TF-IDF's accuracy, and the probe's gain over TF-IDF (the gap a TF-IDF-only report hid).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

from benchmarks.accuracy import RESULTS, ROOT, hold_out_val, read_split
from gradus.config.params import load_params
from gradus.probe import probe_baseline
from tasks.evaluate import tfidf_baseline


def measure(dataset: str) -> dict:
    params = load_params(ROOT / "params.yaml")
    (train, _), (test, _) = read_split(dataset, "train"), read_split(dataset, "test")
    fit, val = hold_out_val(train)
    probe = probe_baseline(params.model.base, params.model.revision, fit, val, test, params.train.max_length,
                           params.evaluate.batch_size, "cpu", params.train.seed)
    started = time.perf_counter()
    tfidf = tfidf_baseline(fit, test)
    return {"rows": {"fit": len(fit), "val": len(val), "test": len(test)}, "probe": probe,
            "tfidf": tfidf | {"seconds": round(time.perf_counter() - started, 2)},
            "probe_gain_over_tfidf": round(probe["accuracy"] - tfidf["accuracy"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", choices=["banking77", "hwu64"])
    args = parser.parse_args()
    results = {name: measure(name) for name in args.dataset or ["banking77", "hwu64"]}
    output = {"benchmark": "probe", "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "datasets": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "probe.json").write_text(json.dumps(output, indent=2) + "\n")
    for name, item in results.items():
        probe = item["probe"]
        print(f"{name}: probe {probe['accuracy']:.4f} (C {probe['C']}, {probe['seconds']:.0f} s) vs TF-IDF "
              f"{item['tfidf']['accuracy']:.4f}")


if __name__ == "__main__":
    main()
