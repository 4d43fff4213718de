"""Train stage: fine-tune the base encoder for sequence classification with the Hugging Face Trainer."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradus.config import Params, TrainConfig
from gradus.errors import DataError
from gradus.io import write_json
from gradus.modeling import TRAINING_SUMMARY, BaseModel, pick_device, resolve_base, save_label_map


class EncodedTexts:
    """Tokenised texts (no padding: the collator pads each batch to its own longest row)."""

    def __init__(self, encodings: dict[str, list[list[int]]], labels: list[int]) -> None:
        self.encodings = encodings
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {key: values[i] for key, values in self.encodings.items()}
        item["labels"] = self.labels[i]
        return item


def encode(frame: pd.DataFrame, tokenizer: Any, label_ids: dict[str, int], max_length: int) -> EncodedTexts:
    """Tokenise a split; every label must be one the model knows."""
    unknown = sorted(set(frame["label"]) - set(label_ids))
    if unknown:
        raise DataError(f"labels {unknown[:5]} appear in val/test but not in train; add training examples")
    encodings = tokenizer(list(frame["text"]), truncation=True, max_length=max_length)
    return EncodedTexts(dict(encodings), [label_ids[x] for x in frame["label"]])


def macro_f1_metric(prediction: Any) -> dict[str, float]:
    """Trainer compute_metrics: accuracy and macro-F1 on the validation split."""
    from sklearn.metrics import f1_score

    predicted = np.argmax(prediction.predictions, axis=-1)
    actual = prediction.label_ids
    return {"accuracy": float((predicted == actual).mean()),
            "macro_f1": float(f1_score(actual, predicted, average="macro"))}


def training_arguments(cfg: TrainConfig, device: str, output_dir: str) -> Any:
    """TrainingArguments from params: dynamic padding and length grouping keep padding waste low."""
    import torch
    from transformers import TrainingArguments

    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    return TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float below 1 is a ratio of total steps
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        eval_strategy="epoch",
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=10,
        report_to="none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=device == "cpu",
        bf16=bf16,
        fp16=device == "cuda" and not bf16,
        disable_tqdm=False,
    )


def fine_tune(params: Params, train: pd.DataFrame, val: pd.DataFrame, out: Path) -> dict[str, Any]:
    """Fine-tune and save weights (safetensors), tokenizer and label map into `out`; return a summary."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        set_seed,
    )

    cfg = params.train
    base = resolve_base(params.model.base, params.model.revision)
    device = pick_device(cfg.device)
    set_seed(cfg.seed)
    labels = sorted(train["label"].unique())
    label_ids = {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(base.location, revision=params.model.revision)
    model = AutoModelForSequenceClassification.from_pretrained(
        base.location, revision=params.model.revision, num_labels=len(labels),
        id2label=dict(enumerate(labels)), label2id=label_ids, use_safetensors=True,
    )
    train_set = encode(train, tokenizer, label_ids, cfg.max_length)
    with tempfile.TemporaryDirectory(prefix="gradus-train-") as scratch:
        trainer = Trainer(
            model=model, args=training_arguments(cfg, device, scratch), train_dataset=train_set,
            eval_dataset=encode(val, tokenizer, label_ids, cfg.max_length),
            data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=macro_f1_metric,
        )
        started = time.perf_counter()
        result = trainer.train()
        wall = time.perf_counter() - started
        final_eval = trainer.evaluate()
    out.mkdir(parents=True, exist_ok=True)
    # model.save_pretrained, not trainer.save_model: the latter also writes training_args.bin, a pickle.
    trainer.model.save_pretrained(out)
    tokenizer.save_pretrained(str(out))
    save_label_map(out, labels)
    return _summary(base, device, labels, train_set, result, wall, final_eval)


def _summary(base: BaseModel, device: str, labels: list[str], train_set: EncodedTexts, result: Any,
             wall: float, final_eval: dict[str, float]) -> dict[str, Any]:
    tokens = sum(len(ids) for ids in train_set.encodings["input_ids"])
    epochs = float(result.metrics.get("epoch", 0.0))
    return {
        "base_model": base.name,
        "base_model_revision": base.revision,
        "device": device,
        "num_labels": len(labels),
        "train_rows": len(train_set),
        "epochs": epochs,
        "steps": int(result.global_step),
        "train_loss": round(float(result.training_loss), 6),
        "wall_time_s": round(wall, 2),
        "samples_per_s": round(len(train_set) * epochs / wall, 2) if wall else 0.0,
        "tokens_per_s": round(tokens * epochs / wall, 1) if wall else 0.0,
        "val_accuracy": round(final_eval.get("eval_accuracy", 0.0), 6),
        "val_macro_f1": round(final_eval.get("eval_macro_f1", 0.0), 6),
    }


def run(params: Params) -> dict[str, Any]:
    """Fine-tune on the train split, validate on val, write the model folder and a training summary."""
    splits = Path(params.paths.splits)
    train, val = (pd.read_parquet(splits / f"{name}.parquet") for name in ("train", "val"))
    if train.empty:
        raise DataError(f"{splits / 'train.parquet'}: no training rows; check the validate and split stages")
    model_dir = Path(params.paths.model)
    summary = fine_tune(params, train, val, model_dir)
    # The full summary (base model name and revision included) travels with the model; the DVC metric
    # file keeps the numbers only, so `dvc metrics show` / `dvc exp show` stay readable.
    write_json(summary, model_dir / TRAINING_SUMMARY)
    write_json({k: v for k, v in summary.items() if isinstance(v, int | float)}, Path(params.paths.train_summary))
    print(json.dumps(summary, indent=2))
    return {k: summary[k] for k in ("device", "steps", "samples_per_s", "val_macro_f1")}
