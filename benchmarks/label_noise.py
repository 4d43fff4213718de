"""Label-noise flags on Banking77 with training labels flipped at random: 2.5 % and 5 % of 2,000 rows, 5 % of
5,000 and of 10,003 rows (stratified samples), over several seeds.

    python -m benchmarks.label_noise [--quick]

Side by side on the same flipped labels and the same out-of-fold probabilities:
  baseline   flag every row whose out-of-fold prediction disagrees with its label (no confidence rule)
  words      the confident-disagreement rule on word features only (the rule before character n-grams)
  confident  the confident-disagreement rule (validate.label_noise.min_confidence / max_label_probability)
             with the default features (character n-grams up to validate.label_noise.char_ngrams_max_rows)
  cleanlab   cleanlab's confident learning, find_label_issues (per-class thresholds), prune_by_noise_rate
  cleanlab_both  the same with filter_by="both"
Writes benchmarks/results/label_noise.json: precision and recall per size, seed and variant, and means.
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
from gradus.config.pipeline import LabelNoiseConfig

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


VARIANTS = ("baseline", "words", "confident", "cleanlab", "cleanlab_both")
CASES = ((2000, 0.025), (2000, 0.05), (5000, 0.05), (10003, 0.05))  # (rows, share of labels flipped)


def one_seed(rows: pd.DataFrame, share: float, seed: int, cfg: LabelNoiseConfig) -> dict[str, object]:
    from cleanlab.filter import find_label_issues

    noisy, flipped = flip_labels(rows["label"], share, seed)
    start = time.perf_counter()
    words = out_of_fold_probabilities(rows["text"], noisy, cfg.folds)
    words_seconds = time.perf_counter() - start
    probabilities = out_of_fold_probabilities(rows["text"], noisy, cfg.folds,
                                              chars=len(rows) <= cfg.char_ngrams_max_rows)
    seconds = time.perf_counter() - start - words_seconds
    classes = np.array(sorted(noisy.unique()))
    given = np.searchsorted(classes, noisy.to_numpy())
    confident, best, _ = confident_disagreements(probabilities, given, cfg)
    flags = {"baseline": best != given, "words": confident_disagreements(words, given, cfg)[0], "confident": confident,
             "cleanlab": find_label_issues(given, probabilities),
             "cleanlab_both": find_label_issues(given, probabilities, filter_by="both")}
    return {"seed": seed, "flipped": int(flipped.sum()), "seconds": round(seconds, 2),
            "words_seconds": round(words_seconds, 2),
            **{name: precision_recall(flag, flipped) for name, flag in flags.items()}}


def sample(rows: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """A stratified sample of `size` rows (all rows at full size)."""
    if size >= len(rows):
        return rows
    share = size / len(rows)
    picked = rows.groupby("label", group_keys=False).sample(frac=share, random_state=seed)
    return picked.reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed")
    args = parser.parse_args()
    rows = pd.read_csv(BANKING77).rename(columns={"category": "label"})
    cfg = LabelNoiseConfig()
    seeds = [0] if args.quick else [0, 1, 2, 3, 4]
    cases = {}
    for size, share in CASES:
        runs = [one_seed(sample(rows, size, seed), share, seed, cfg) for seed in seeds]
        mean = {v: {m: round(float(np.mean([r[v][m] for r in runs])), 4) for m in ("precision", "recall")}
                for v in VARIANTS}
        seconds = {k: round(float(np.mean([r[k] for r in runs])), 2) for k in ("words_seconds", "seconds")}
        cases[f"{size} rows, {share:.1%} flipped"] = {"rows": size, "flip_share": share, "runs": runs,
                                                      "mean": mean, "mean_seconds": seconds}
        print(size, share, json.dumps(mean), seconds)
    result = {"benchmark": "label_noise", "config": cfg.model_dump(), "cases": cases,
              "target": "precision >= 0.7 at recall >= 0.5"}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
