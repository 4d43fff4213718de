"""Training throughput: the Hugging Face example's setup versus gradus's train stage, side by side.

    python -m benchmarks.train_throughput [--quick]

Same base model (the packaged all-MiniLM-L6-v2), same Banking77 samples, same number of samples seen,
one process, back to back:
  hf_example       run_classification.py's defaults: every sequence padded to 128 tokens
                   (pad_to_max_length), random order, per-device batch 8, fp32
  hf_example_b32   the same padding and order at gradus's batch size (32): isolates padding from batching
  gradus_fp32      tasks/train.py's TrainingArguments: dynamic padding, length-grouped batches, batch 32, fp32
  gradus           the same with the default train.precision=auto (bf16 autocast where this CPU measures
                   bf16 matmuls faster, fp32 elsewhere): what the train stage does here
Also measured in the same run: this machine's matmul peak (fp32 and bf16), and the FLOP/s gradus achieves
as a fraction of the peak of the precision it trains in (6 x non-embedding parameters x tokens;
'hardware' counts padded tokens the model computed, 'model' counts real tokens only).
Writes benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from gradus.config.params import load_params
from gradus.modeling import matmul_flops_per_s, resolve_base
from gradus.task_types.seam import task_type
from tasks.train import EncodedTexts, mixed_precision, plan_training, training_arguments, validation_metrics

ROOT = Path(__file__).resolve().parents[1]
BANKING77 = ROOT / "benchmarks" / "data" / "banking77" / "train.csv"
RESULTS = ROOT / "benchmarks" / "results" / "train_throughput.json"


class StepClock(TrainerCallback):
    """Times steps 2..N: the first step (warm-up) and any end-of-training save or evaluation stay out."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.ends.append(time.perf_counter())


class CountingCollator:
    """Wraps a collator and counts the tokens the model computes (padding included) and the real ones."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.padded, self.real = inner, 0, 0

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(features)
        self.padded += int(batch["input_ids"].numel())
        self.real += int(batch["attention_mask"].sum())
        return batch


def non_embedding_parameters(model: Any) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)


def run_variant(name: str, texts: list[str], labels: list[int], num_labels: int, batch: int,
                pad_to: int | None, group: bool, overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train for one pass over the samples; return throughput and token counts."""
    base = resolve_base("packaged").location
    set_seed(42)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=num_labels)
    if pad_to:
        encodings = tokenizer(texts, truncation=True, max_length=pad_to, padding="max_length")
    else:
        encodings = tokenizer(texts, truncation=True, max_length=64)
    collator = CountingCollator(DataCollatorWithPadding(tokenizer))
    with tempfile.TemporaryDirectory() as scratch:
        dataset = EncodedTexts(dict(encodings), labels)
        eval_set = None
        if name.startswith("gradus"):  # the train stage's own TrainingArguments; no evaluation in these steps
            params = load_params(ROOT / "params.yaml", [f"train.batch_size={batch}", "train.device=cpu",
                                                        f"train.max_steps={len(texts) // batch}",
                                                        "train.eval_steps=1000000", *overrides])
            plan = plan_training(params.train, len(texts), num_labels)
            task = task_type(params.model.task)
            args = training_arguments(params.train, "cpu", scratch, plan, task.primary_metric)
            # The Trainer evaluates once at the last step: 8 rows keep that out of the timing.
            eval_set = EncodedTexts({k: v[:8] for k, v in encodings.items()}, labels[:8])
        else:
            args = TrainingArguments(output_dir=scratch, per_device_train_batch_size=batch,
                                     max_steps=len(texts) // batch, use_cpu=True, report_to="none",
                                     save_strategy="no", seed=42, disable_tqdm=True,
                                     train_sampling_strategy="group_by_length" if group else "random")
        clock = StepClock()
        trainer = Trainer(model=model, args=args, train_dataset=dataset, eval_dataset=eval_set,
                          data_collator=collator, compute_metrics=validation_metrics(task) if eval_set else None,
                          callbacks=[clock])
        trainer.train()
    steps = len(clock.ends)
    seconds = clock.ends[-1] - clock.ends[0]
    samples = (steps - 1) * batch
    collator.padded = collator.padded * (steps - 1) // steps  # tokens of the timed steps (all but one)
    collator.real = collator.real * (steps - 1) // steps
    flops_per_token = 6 * non_embedding_parameters(model)
    return {"variant": name, "batch_size": batch, "pad_to": pad_to, "length_grouping": group,
            "samples": samples, "seconds": round(seconds, 2), "samples_per_s": round(samples / seconds, 2),
            "padded_tokens": collator.padded, "real_tokens": collator.real,
            "padding_share": round(1 - collator.real / collator.padded, 4),
            "hardware_flops_per_s": flops_per_token * collator.padded / seconds,
            "model_flops_per_s": flops_per_token * collator.real / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="192 samples per variant (within 60 s)")
    parser.add_argument("--samples", type=int, default=None)
    args = parser.parse_args()
    samples = args.samples or (192 if args.quick else 1536)
    rows = pd.read_csv(BANKING77).sample(samples, random_state=0)
    classes = sorted(rows["category"].unique())
    texts, labels = list(rows["text"]), [classes.index(c) for c in rows["category"]]
    torch.set_num_threads(os.cpu_count() or 1)
    peaks = {"fp32": matmul_flops_per_s(torch.float32), "bf16": matmul_flops_per_s(torch.bfloat16)}
    variants = [run_variant("hf_example", texts, labels, len(classes), 8, 128, False),
                run_variant("hf_example_b32", texts, labels, len(classes), 32, 128, False),
                run_variant("gradus_fp32", texts, labels, len(classes), 32, None, True, ("train.precision=fp32",)),
                run_variant("gradus", texts, labels, len(classes), 32, None, True)]
    by_name = {v["variant"]: v for v in variants}
    gradus, fp32 = by_name["gradus"], by_name["gradus_fp32"]
    params = load_params(ROOT / "params.yaml", ["train.device=cpu"])
    gradus_precision = "bf16" if mixed_precision(params.train, "cpu")[0] else "fp32"
    result = {
        "benchmark": "train_throughput", "samples": samples, "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform(), "torch": torch.__version__},
        "matmul_peak_flops_per_s": peaks, "variants": variants,
        "ratio_samples_per_s_gradus_over_hf_example": round(
            gradus["samples_per_s"] / by_name["hf_example"]["samples_per_s"], 2),
        "ratio_samples_per_s_gradus_over_hf_example_b32": round(
            gradus["samples_per_s"] / by_name["hf_example_b32"]["samples_per_s"], 2),
        "fraction_of_matmul_peak": {
            "gradus_fp32_hardware_vs_fp32_peak": round(fp32["hardware_flops_per_s"] / peaks["fp32"], 4),
            "gradus_fp32_model_vs_fp32_peak": round(fp32["model_flops_per_s"] / peaks["fp32"], 4),
            f"gradus_hardware_vs_{gradus_precision}_peak": round(
                gradus["hardware_flops_per_s"] / peaks[gradus_precision], 4),
            f"gradus_model_vs_{gradus_precision}_peak": round(gradus["model_flops_per_s"] / peaks[gradus_precision], 4),
        },
        "ratio_samples_per_s_gradus_fp32_over_hf_example": round(
            fp32["samples_per_s"] / by_name["hf_example"]["samples_per_s"], 2),
        "gradus_precision_chosen_by_auto": gradus_precision,
        "ratio_samples_per_s_gradus_over_gradus_fp32": round(gradus["samples_per_s"] / fp32["samples_per_s"], 2),
        "target": "samples/s ratio gradus / hf_example >= 4",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k.startswith(("ratio", "fraction", "matmul", "gradus_"))},
                     indent=2))
    for v in variants:
        print(v["variant"], v["samples_per_s"], "samples/s, padding share", v["padding_share"])


if __name__ == "__main__":
    main()
