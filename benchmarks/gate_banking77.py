"""Gate correctness on Banking77: does the promotion gate let the right challengers through?

    python -m benchmarks.gate_banking77 [--quick] [--epochs N]

A champion is fine-tuned on Banking77 train (10 % held out for model selection), registered in a temporary
local registry and made champion. Three challengers are then judged against it on the official test split
with the gate's own code (tasks.evaluate + tasks.gate), side by side in one run:

  identical   the champion's own files                      -> must pass
  data_30pct  the same recipe on a stratified 30 % of train -> must fail (clearly worse), with reasons
  scrambled   one class's training labels replaced by labels drawn uniformly at random
                                                            -> must fail on the per-class recall rule

Writes benchmarks/results/gate_banking77.json. `--quick` uses the first 20 intents (about 3 minutes on 2
cores; the full run about 15).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from gradus.config.params import Params, load_params
from gradus.lineage import git_state
from gradus.modeling import TRAINING_SUMMARY, load_label_map
from gradus.registry.versions import open_registry
from tasks.evaluate import evaluate_model
from tasks.gate import champion_predictions, verdict
from tasks.train import fine_tune

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data" / "banking77"
RESULTS = ROOT / "benchmarks" / "results" / "gate_banking77.json"


def load(quick: bool) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Banking77 train split into fit/val (stratified), and the official test split."""
    train = pd.read_csv(DATA / "train.csv").rename(columns={"category": "label"})
    test = pd.read_csv(DATA / "test.csv").rename(columns={"category": "label"})
    if quick:
        keep = sorted(train["label"].unique())[:20]
        train, test = train[train["label"].isin(keep)], test[test["label"].isin(keep)]
    fit, val = train_test_split(train, test_size=0.1, random_state=42, stratify=train["label"])
    return fit.reset_index(drop=True), val.reset_index(drop=True), test.reset_index(drop=True)


def scramble(frame: pd.DataFrame, label: str, seed: int) -> pd.DataFrame:
    """Replace every `label` row's label with one drawn uniformly from all labels (the class stays known)."""
    rng = np.random.default_rng(seed)
    labels = sorted(frame["label"].unique())
    rows = frame.index[frame["label"] == label]
    out = frame.copy()
    out.loc[rows, "label"] = rng.choice(labels, size=len(rows))
    if not (out["label"] == label).any():
        out.loc[rows[0], "label"] = label
    return out


def train_model(params: Params, fit: pd.DataFrame, val: pd.DataFrame, out: Path, work: Path) -> dict[str, Any]:
    """Fine-tune with the train stage's code into `out`; fresh checkpoints each time."""
    run = load_params(ROOT / "params.yaml", [*overrides(params), f"paths.checkpoints={work / out.name}-ckpt",
                                             f"paths.training_log={work / out.name}-log"])
    started = time.perf_counter()
    summary = fine_tune(run, fit, val, out)
    (out / TRAINING_SUMMARY).write_text(json.dumps(summary, indent=2))
    return {"train_rows": len(fit), "wall_s": round(time.perf_counter() - started, 1),
            "val_macro_f1": summary["val_macro_f1"], "steps": summary["steps"]}


def overrides(params: Params) -> list[str]:
    return [f"train.{key}={value}" for key, value in params.train.model_dump().items()]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def judge(name: str, folder: Path, fit: pd.DataFrame, test: pd.DataFrame, params: Params,
          registry: Any) -> dict[str, Any]:
    """Evaluate a challenger and run the gate against the registry's champion."""
    evaluation = evaluate_model(folder, fit, test, params)
    champion = champion_predictions(registry, list(test["text"]), "cpu", params.evaluate.batch_size)
    report = verdict(evaluation.metrics, evaluation.behavioral, list(test["label"]), evaluation.predicted,
                     load_label_map(folder), champion, params.gate)
    failed = [c["name"] for c in report["checks"] if not c["passed"]]
    print(f"{name}: {'PASS' if report['passed'] else 'FAIL'} {failed}")
    return {"passed": report["passed"], "failed_checks": failed, "reasons": report["reasons"],
            "accuracy": evaluation.metrics["accuracy"], "macro_f1": evaluation.metrics["macro_f1"],
            "bootstrap": report.get("bootstrap"), "mcnemar": report.get("mcnemar"),
            "per_class_worst": report.get("per_class", [])[:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=float, default=None)
    parser.add_argument("--scramble-class", default="card_arrival")
    args = parser.parse_args()
    epochs = args.epochs or 3
    fit, val, test = load(args.quick)
    params = load_params(ROOT / "params.yaml", [f"train.epochs={epochs}", "train.eval_steps=100",
                                                "train.early_stopping_patience=3", "train.device=cpu",
                                                "evaluate.slice_columns=[]"])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gradus-gate-b77-") as scratch:
        work = Path(scratch)
        registry = open_registry(str(work / "registry"))
        training = {"champion": train_model(params, fit, val, work / "champion", work)}
        lineage = {"params": params.as_dict(), "base_model": {"name": "packaged", "revision": None},
                   "datasets": {"train.csv": md5(DATA / "train.csv"), "test.csv": md5(DATA / "test.csv")},
                   "code": git_state(ROOT), "dvc_lock": {}}
        champion_eval = evaluate_model(work / "champion", fit, test, params)
        # The champion must itself have passed the gate (first-model mode), as it would have in production.
        first = verdict(champion_eval.metrics, champion_eval.behavioral, list(test["label"]), champion_eval.predicted,
                        load_label_map(work / "champion"), None, params.gate)
        manifest, _ = registry.register(work / "champion", lineage, champion_eval.metrics, None, "benchmark",
                                        "gate benchmark champion")
        registry.promote(manifest["version"], run="benchmark", reason="gate benchmark champion")

        thirty = train_test_split(fit, train_size=0.3, random_state=1, stratify=fit["label"])[0]
        training["data_30pct"] = train_model(params, thirty.reset_index(drop=True), val, work / "data_30pct", work)
        scrambled = scramble(fit, args.scramble_class, seed=3)
        training["scrambled"] = train_model(params, scrambled, val, work / "scrambled", work)

        challengers = {"identical": work / "champion", "data_30pct": work / "data_30pct",
                       "scrambled": work / "scrambled"}
        results = {name: judge(name, folder, fit, test, params, registry) for name, folder in challengers.items()}
    expected = {"champion_first_model": first["passed"], "identical": results["identical"]["passed"],
                "data_30pct": not results["data_30pct"]["passed"],
                "scrambled": not results["scrambled"]["passed"]
                and "per_class_recall" in results["scrambled"]["failed_checks"]}
    output = {
        "benchmark": "gate_banking77", "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "rows": {"fit": len(fit), "val": len(val), "test": len(test), "labels": int(fit["label"].nunique())},
        "epochs": epochs, "scrambled_class": args.scramble_class,
        "champion": {"accuracy": champion_eval.metrics["accuracy"], "macro_f1": champion_eval.metrics["macro_f1"],
                     "behavioral": champion_eval.metrics["behavioral"], "first_model_gate_passed": first["passed"],
                     "first_model_gate_reasons": first["reasons"]},
        "gate_params": params.gate.model_dump(), "training": training, "challengers": results,
        "expected_outcomes_met": expected, "all_met": all(expected.values()),
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(output, indent=2, default=str) + "\n")
    print(json.dumps({k: output[k] for k in ("champion", "expected_outcomes_met", "wall_time_s")}, indent=2))


if __name__ == "__main__":
    main()
