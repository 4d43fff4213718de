"""SetFit-style training measured against the same split, probe and targets as benchmarks/accuracy.py.

    pip install -c constraints.txt -e ".[setfit]"      # setfit 1.2.0 and evaluate, pinned in constraints.txt
    python -m benchmarks.setfit_recipe --dataset banking77|hwu64 --seeds 42 43 44 [--max-steps N]

SetFit (Tunstall et al. 2022) fine-tunes the sentence encoder contrastively on pairs of texts (same label:
similar, different labels: dissimilar; its default CosineSimilarityLoss and pair sampler, batch 16), through the
`setfit` library, then fits a head on the tuned encoder's embeddings. The head here is the probe's (the base's own
pooling, normalised, logistic regression with C chosen on the validation split: gradus.probe), so the only thing
that differs from the frozen-encoder probe is the contrastive training of the encoder.

Budget: SetFit's defaults (20 pairs per text and both directions: 360k pairs for Banking77's 9,003 rows) are
hours on 2 CPU cores; `--max-steps` caps the pairs at steps x 16 (setfit's own `max_steps`), chosen so training
costs about what the default `lp_ft` recipe does (measured: docs/performance.md). Results are written as
accuracy_<dataset>_setfit_seed<N>.json in the accuracy benchmark's shape, so `python -m benchmarks.accuracy
--summarize` puts them beside the other recipes. Nothing in gradus imports setfit: a recipe is only adopted where
it wins, and SetFit's own saved head is a pickle (gradus would store the probe-style head as safetensors).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from benchmarks.accuracy import (
    DATASETS,
    MIN_MARGIN_OVER_PROBE,
    MIN_MARGIN_OVER_TFIDF,
    RESULTS,
    hold_out_val,
    read_split,
    summarize,
)
from gradus.config.params import load_params
from gradus.modeling import resolve_base
from gradus.probe import embed, fit_probe, probe_baseline
from tasks.evaluate import score, tfidf_baseline

ROOT = Path(__file__).resolve().parents[1]
BATCH = 16               # setfit's default embedding batch size (pairs per step)
BODY_LEARNING_RATE = 2e-5  # setfit's default body learning rate
DEFAULT_MAX_STEPS = 1000  # 756-1,504 s of contrastive steps on one shared core; lp_ft trains 550-721 s (Performance)


def train_body(location: str, fit, seed: int, max_steps: int, out: Path) -> dict:
    """Contrastive fine-tuning of the base encoder with setfit; the tuned encoder saved to `out` (safetensors)."""
    try:
        from datasets import Dataset
        from setfit import SetFitModel, Trainer, TrainingArguments
    except ImportError:
        raise SystemExit('this benchmark needs setfit: pip install -c constraints.txt -e ".[setfit]"') from None
    model = SetFitModel.from_pretrained(location)
    args = TrainingArguments(batch_size=BATCH, num_epochs=1, max_steps=max_steps,
                             body_learning_rate=BODY_LEARNING_RATE,
                             seed=seed, report_to="none", use_amp=False, show_progress_bar=False,
                             save_strategy="no", logging_strategy="no")
    trainer = Trainer(model=model, args=args,
                      train_dataset=Dataset.from_dict({"text": list(fit["text"]), "label": list(fit["label"])}))
    started = time.perf_counter()
    trainer.train_embeddings(list(fit["text"]), list(fit["label"]), args=args)  # the body only: our head follows
    seconds = time.perf_counter() - started
    model.model_body.save(str(out), safe_serialization=True)
    state = trainer.st_trainer.state
    return {"steps": state.global_step, "pairs": state.global_step * BATCH, "wall_time_s": round(seconds, 1)}


def known_probe(dataset: str) -> dict | None:
    """The probe's figures from an accuracy result that fitted it: it is deterministic on the fixed split (every
    result that fitted it agrees), so it is not fitted again here (about two minutes a run)."""
    import json

    for path in sorted(RESULTS.glob(f"accuracy_{dataset}_*.json")):
        if probe := json.loads(path.read_text()).get("baseline_probe"):
            return probe
    return None


def run_one(dataset: str, seed: int, max_steps: int) -> dict:
    """SetFit body + the probe's head on one dataset and seed; writes and returns the result."""
    import json

    import torch

    _, min_accuracy, max_train_s = DATASETS[dataset]
    (train, empty_train), (test, empty_test) = read_split(dataset, "train"), read_split(dataset, "test")
    fit, val = hold_out_val(train)
    params = load_params(ROOT / "params.yaml", [f"train.seed={seed}"])
    base = resolve_base(params.model.base, params.model.revision)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"gradus-setfit-{dataset}-") as work:
        body = train_body(base.location, fit, seed, max_steps, Path(work) / "body")
        tuned = fit_probe(str(Path(work) / "body"), fit, val, params.train.max_length, params.evaluate.batch_size,
                          device, seed)
        test_x = embed(str(Path(work) / "body"), list(test["text"]), params.train.max_length,
                       params.evaluate.batch_size, device, tuned.pooling)
    predicted = [str(p) for p in tuned.head.model.predict(test_x)]
    wall = time.perf_counter() - started
    labels = sorted(set(fit["label"]))
    result = score(list(test["label"]), predicted, labels)
    baseline = tfidf_baseline(fit, test)
    probe = known_probe(dataset) or probe_baseline(params.model.base, params.model.revision, fit, val, test,
                                                   params.train.max_length, params.evaluate.batch_size, device, seed)
    # Training time is the whole recipe's: the contrastive steps, then embedding train/val and fitting the head.
    train_seconds = round(body["wall_time_s"] + tuned.seconds, 1)
    checks = {"accuracy": result["accuracy"] >= min_accuracy,
              "margin_over_tfidf": result["accuracy"] - baseline["accuracy"] >= MIN_MARGIN_OVER_TFIDF,
              "margin_over_probe": result["accuracy"] - probe["accuracy"] >= MIN_MARGIN_OVER_PROBE}
    if max_train_s:
        checks["training_time"] = train_seconds <= max_train_s
    output = {
        "benchmark": "accuracy", "dataset": dataset, "base_model": base.name, "device": device, "precision": "fp32",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "train_rows": len(fit), "val_rows": len(val), "test_rows": len(test), "labels": len(labels),
        "rows_without_text_skipped": {"train": empty_train, "test": empty_test},
        "overrides": [f"setfit.max_steps={max_steps}", f"train.seed={seed}"],
        "params": {"seed": seed, "setfit": {"batch_size": BATCH, "body_learning_rate": BODY_LEARNING_RATE,
                                            "max_steps": max_steps, "loss": "CosineSimilarityLoss",
                                            "sampling_strategy": "oversampling"}},
        "test_accuracy": result["accuracy"], "test_macro_f1": result["macro_f1"],
        "baseline_tfidf": baseline, "margin_over_tfidf": round(result["accuracy"] - baseline["accuracy"], 6),
        "baseline_probe": probe, "margin_over_probe": round(result["accuracy"] - probe["accuracy"], 6),
        "training": {"method": "setfit", "contrastive": body, "head": tuned.summary(),
                     "wall_time_s": train_seconds},
        "wall_time_s_total": round(wall, 1),
        "targets": {"min_test_accuracy": min_accuracy, "min_margin_over_tfidf": MIN_MARGIN_OVER_TFIDF,
                    "min_margin_over_probe": MIN_MARGIN_OVER_PROBE, "max_training_s": max_train_s},
        "checks": checks, "targets_met": False,  # never the defaults: setfit is not a gradus recipe
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"accuracy_{dataset}_setfit_seed{seed}.json").write_text(json.dumps(output, indent=2) + "\n")
    print(json.dumps({k: v for k, v in output.items() if k != "params"}, indent=2))
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="banking77")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--max-steps", type=int, default=DEFAULT_MAX_STEPS,
                        help=f"contrastive steps of {BATCH} pairs (default {DEFAULT_MAX_STEPS})")
    args = parser.parse_args()
    for seed in args.seeds:
        run_one(args.dataset, seed, args.max_steps)
    summarize()


if __name__ == "__main__":
    main()
