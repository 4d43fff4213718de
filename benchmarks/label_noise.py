"""Label-noise flags on Banking77 with 5 % of training labels flipped at random, over several seeds.

    python -m benchmarks.label_noise [--quick]

Side by side on the same flipped labels:
  baseline  flag every row whose out-of-fold prediction disagrees with its label (no confidence rule)
  gradus    data_checks.label_noise: flag only confident disagreements (params validate.label_noise)
Writes benchmarks/results/label_noise.json: precision and recall of the flags per seed, and their means.
Target: precision >= 0.7 at recall >= 0.5.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from data_checks.label_noise import confident_disagreements, out_of_fold_probabilities
from gradus.config import LabelNoiseConfig

ROOT = Path(__file__).resolve().parents[1]
BANKING77 = ROOT / "benchmarks" / "data" / "banking77" / "train.csv"
RESULTS = ROOT / "benchmarks" / "results" / "label_noise.json"


def flip_labels(labels: pd.Series, share: float, seed: int) -> tuple[pd.Series, np.ndarray]:
    """Give `share` of the rows a different label, uniformly at random."""
    rng = np.random.default_rng(seed)
    classes = np.array(sorted(labels.unique()))
    flipped = rng.random(len(labels)) < share
    noisy = labels.to_numpy().copy()
    for i in np.flatnonzero(flipped):
        noisy[i] = rng.choice(classes[classes != noisy[i]])
    return pd.Series(noisy, index=labels.index), flipped


def precision_recall(flags: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    hits = int((flags & truth).sum())
    return {"flagged": int(flags.sum()), "precision": round(hits / max(int(flags.sum()), 1), 4),
            "recall": round(hits / max(int(truth.sum()), 1), 4)}


def one_seed(rows: pd.DataFrame, seed: int, cfg: LabelNoiseConfig) -> dict[str, object]:
    noisy, flipped = flip_labels(rows["label"], 0.05, seed)
    start = time.perf_counter()
    probabilities = out_of_fold_probabilities(rows["text"], noisy, cfg.folds)
    seconds = time.perf_counter() - start
    classes = np.array(sorted(noisy.unique()))
    given = np.searchsorted(classes, noisy.to_numpy())
    confident, best, _ = confident_disagreements(probabilities, given, cfg)
    disagree = best != given
    return {"seed": seed, "flipped": int(flipped.sum()), "seconds": round(seconds, 2),
            "baseline": precision_recall(disagree, flipped), "gradus": precision_recall(confident, flipped)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed")
    args = parser.parse_args()
    rows = pd.read_csv(BANKING77).rename(columns={"category": "label"})
    cfg = LabelNoiseConfig()
    runs = [one_seed(rows, seed, cfg) for seed in ([0] if args.quick else [0, 1, 2, 3, 4])]
    mean = {variant: {m: round(float(np.mean([r[variant][m] for r in runs])), 4) for m in ("precision", "recall")}
            for variant in ("baseline", "gradus")}
    result = {"benchmark": "label_noise", "rows": len(rows), "flip_share": 0.05, "config": cfg.model_dump(),
              "runs": runs, "mean": mean, "target": "precision >= 0.7 at recall >= 0.5",
              "target_met": mean["gradus"]["precision"] >= 0.7 and mean["gradus"]["recall"] >= 0.5}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"mean": mean, "seconds_per_run": [r["seconds"] for r in runs],
                      "target_met": result["target_met"]}, indent=2))


if __name__ == "__main__":
    main()
