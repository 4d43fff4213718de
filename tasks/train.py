"""Train stage: fine-tune the base encoder for sequence classification with the Hugging Face Trainer.

The Trainer does the loop, mixed precision, gradient accumulation, DDP under torchrun, checkpointing and
exact resume (model, optimizer, scheduler, RNG states, data position); this module only configures it,
decides whether a checkpoint belongs to this run, and writes the outputs (rank 0 only).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from gradus.config.pipeline import StageParams, TrainConfig
from gradus.errors import ConfigError, DataError
from gradus.io import write_json
from gradus.modeling import (
    DECISION_FILE,
    TRAINING_SUMMARY,
    BaseModel,
    bf16_pays,
    forward,
    pick_device,
    resolve_base,
    save_label_map,
    sha256_file,
)
from gradus.pooled import from_base, set_head
from gradus.probe import Probe, fit_probe, pooling_mode
from gradus.task_types.base import TaskType
from gradus.task_types.seam import task_type
from gradus.trial import TRIAL_ENV, search_trial_report

FINGERPRINT = "fingerprint.json"
CHECKPOINT_FILES = ("model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json")
NOT_SCORES = {"eval_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second"}


class EncodedTexts:
    """Tokenised texts (no padding: the collator pads each batch to its own longest row)."""

    def __init__(self, encodings: dict[str, list[list[int]]], labels: list[Any]) -> None:
        self.encodings = encodings
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {key: values[i] for key, values in self.encodings.items()}
        item["labels"] = self.labels[i]
        return item


def encode(frame: pd.DataFrame, tokenizer: Any, task: TaskType, labels: list[str], params: StageParams) -> EncodedTexts:
    """Tokenise a split as its task type does (a row per text; a row per window of a text), its targets encoded;
    every label must be one the model knows."""
    encodings, targets = task.encode(frame, tokenizer, labels, params.train.max_length, params)
    return EncodedTexts(encodings, targets)


# Above this many optimizer steps an epoch is evaluated (and checkpointed) in equal parts, so a long epoch
# still gets resumable checkpoints and a timely early stop.
MAX_EVAL_INTERVAL = 1000


@dataclass(frozen=True)
class TrainingPlan:
    """How long to train and how often to evaluate, from params and the data (README "Training recipe")."""

    steps_per_epoch: int
    epochs: float
    eval_steps: int
    patience_evaluations: int  # evaluations without improvement before stopping; 0 = never stop early
    rule: str                  # how `epochs` was chosen, in words (the training summary keeps it)


def plan_training(cfg: TrainConfig, rows: int, num_labels: int, world_size: int = 1) -> TrainingPlan:
    """The epoch budget and evaluation cadence.

    epochs auto: at least `min_steps_per_class` optimizer steps per label, rounded up to whole epochs and
    kept within [min_epochs, max_epochs]. Measured (benchmarks/results/accuracy_*.json): many-class data needs
    a number of updates that grows with the label count, not a fixed epoch count -- 3 epochs left Banking77
    (77 labels, 282 steps an epoch) at 82 % test accuracy while val loss was still falling.
    """
    # The Trainer's own arithmetic: batches per rank, then optimizer steps (a partial accumulation counts).
    batches = math.ceil(math.ceil(rows / world_size) / cfg.batch_size)
    steps_per_epoch = max(math.ceil(batches / cfg.gradient_accumulation_steps), 1)
    if cfg.epochs == "auto":
        wanted = cfg.min_steps_per_class * num_labels / steps_per_epoch
        epochs = float(min(max(math.ceil(wanted), cfg.min_epochs), cfg.max_epochs))
        rule = (f"auto: {cfg.min_steps_per_class} steps x {num_labels} labels / {steps_per_epoch} steps an epoch "
                f"= {wanted:.2f} -> {epochs:g} epochs (bounds {cfg.min_epochs:g}-{cfg.max_epochs:g})")
    else:
        epochs, rule = float(cfg.epochs), f"set: {float(cfg.epochs):g} epochs"
    if cfg.eval_steps == "auto":
        parts = math.ceil(steps_per_epoch / MAX_EVAL_INTERVAL)
        eval_steps = math.ceil(steps_per_epoch / parts)
    else:
        eval_steps = cfg.eval_steps
    patience = math.ceil(cfg.early_stopping_patience * steps_per_epoch / eval_steps)
    return TrainingPlan(steps_per_epoch, epochs, eval_steps, patience, rule)


class EarlyStopRule:
    """The early-stopping decision: stop once `patience` evaluations in a row improved neither val macro-F1 (by
    more than `min_delta`) nor val loss (by more than `loss_tolerance` of the best loss so far).

    Written here because the Trainer's EarlyStoppingCallback watches one metric: on macro-F1 alone it stopped
    a 150-intent run at epoch 2.1 of 3 while val loss was still falling.
    """

    def __init__(self, patience: int, min_delta: float, loss_tolerance: float) -> None:
        self.patience, self.min_delta, self.loss_tolerance = patience, min_delta, loss_tolerance
        self.best_f1: float | None = None
        self.best_loss: float | None = None
        self.waited = 0

    def improved(self, f1: float, loss: float) -> bool:
        """Record one evaluation; True when it improved either signal by more than its tolerance."""
        better_f1 = self.best_f1 is None or f1 > self.best_f1 + self.min_delta
        better_loss = self.best_loss is None or loss < self.best_loss * (1 - self.loss_tolerance)
        self.best_f1 = f1 if self.best_f1 is None else max(self.best_f1, f1)
        self.best_loss = loss if self.best_loss is None else min(self.best_loss, loss)
        self.waited = 0 if better_f1 or better_loss else self.waited + 1
        return better_f1 or better_loss




def trainer_callbacks(cfg: TrainConfig, plan: TrainingPlan, task: TaskType,
                      trial: dict[str, Any] | None = None) -> list[Any]:
    """Early stopping, the time budget and a search trial's reporting, as Trainer callbacks; each one that
    ends the run sets `stop_reason`. Built here, not at import, so importing this module stays light."""
    from transformers.trainer_callback import ExportableState, TrainerCallback

    class EpochEarlyStopping(EarlyStopRule, TrainerCallback, ExportableState):
        """EarlyStopRule at every evaluation; its state is saved in checkpoints (ExportableState, restored by
        the Trainer), so a resumed run keeps counting where it was."""

        stop_reason: str | None = None

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float],
                        **kwargs: Any) -> None:
            key = f"eval_{task.primary_metric}"
            if key not in metrics or "eval_loss" not in metrics or self.stop_reason:
                return
            self.improved(metrics[key], metrics["eval_loss"])
            if self.waited >= self.patience:
                control.should_training_stop = True
                self.stop_reason = (f"early stopping: {self.patience} evaluations without val "
                                    f"{task.primary_metric_name} up by "
                                    f"more than {self.min_delta} or val loss down by more than "
                                    f"{self.loss_tolerance:.1%}")

        def state(self) -> dict[str, Any]:
            return {"args": {"patience": self.patience, "min_delta": self.min_delta,
                             "loss_tolerance": self.loss_tolerance},
                    "attributes": {"best_f1": self.best_f1, "best_loss": self.best_loss, "waited": self.waited}}

    class TimeBudget(TrainerCallback):
        """train.max_minutes: past the budget, evaluate and checkpoint once more, then stop (the best
        checkpoint is still the model kept)."""

        stop_reason: str | None = None

        def __init__(self, minutes: float) -> None:
            self.minutes, self.started = minutes, time.monotonic()

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.monotonic()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not self.stop_reason and time.monotonic() - self.started > self.minutes * 60:
                control.should_evaluate = control.should_save = control.should_training_stop = True
                self.stop_reason = f"time budget: train.max_minutes {self.minutes:g} reached"

    callbacks: list[Any] = []
    if plan.patience_evaluations:
        callbacks.append(EpochEarlyStopping(plan.patience_evaluations, cfg.early_stopping_min_delta,
                                            cfg.early_stopping_loss_tolerance))
    if cfg.max_minutes:
        callbacks.append(TimeBudget(cfg.max_minutes))
    if trial:
        callbacks.append(search_trial_report(trial))
    return callbacks


def validation_metrics(task: TaskType, labels: list[str]) -> Any:
    """Trainer compute_metrics: the task type's scores on the validation split (classification: accuracy and
    macro-F1, the primary), label ids read in `labels`' order."""
    def compute(prediction: Any) -> dict[str, float]:
        return task.metrics(prediction.label_ids, prediction.predictions, {"labels": labels})

    return compute


def mixed_precision(cfg: TrainConfig, device: str) -> tuple[bool, bool]:
    """(bf16, fp16) flags. auto: bf16 on CUDA where supported, else fp16; on CPU, bf16 only where a
    matmul measurement shows it faster (benchmarks/train_throughput.py: 2.1x samples/s on this machine)."""
    if cfg.precision == "auto":
        bf16 = bf16_pays(device)
        return bf16, device == "cuda" and not bf16
    return cfg.precision == "bf16", cfg.precision == "fp16"


def training_arguments(cfg: TrainConfig, device: str, output_dir: str, plan: TrainingPlan,
                       primary_metric: str, precision: tuple[bool, bool] | None = None) -> Any:
    """TrainingArguments from params and the plan: dynamic padding and length grouping keep padding low.
    `precision` (bf16, fp16): the run's recorded decision; None decides now (mixed_precision)."""
    from transformers import TrainingArguments

    bf16, fp16 = precision if precision is not None else mixed_precision(cfg, device)
    return TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=plan.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float below 1 is a ratio of total steps
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        eval_strategy="steps",
        eval_steps=plan.eval_steps,
        save_strategy="steps",
        save_steps=plan.eval_steps,
        restore_callback_states_from_checkpoint=True,  # the early-stopping count survives a resume
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=True,  # the best checkpoint (the task's primary metric on val) is the model kept
        metric_for_best_model=primary_metric,
        greater_is_better=True,
        logging_strategy="steps",
        logging_steps=10,
        report_to="none",  # DVCLive is added as a callback with our own log folder
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=device == "cpu",
        bf16=bf16,
        fp16=fp16,
        torch_compile=cfg.torch_compile,
        ddp_find_unused_parameters=False,
        disable_tqdm=False,
    )


def run_fingerprint(params: StageParams, split_files: list[Path]) -> str:
    """What makes two training runs the same run: training and model params, and the exact split files."""
    settings = (params.train.model_dump(exclude={"resume"}) | params.model.model_dump()
                | task_type(params.model.task).settings(params))
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in split_files:
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def checkpoint_to_resume(folder: Path, fingerprint: str, resume: bool, is_main: bool,
                         decide: Callable[[], dict[str, Any]]) -> tuple[str | None, dict[str, Any]]:
    """(The last checkpoint of this same run, or None after clearing checkpoints of any other run; the run's
    decisions). `decide()` makes the decisions a run must keep to its end (mixed precision, measured on a CPU: a
    measurement taken again on resume, on a busier machine, could switch a half-trained run to other arithmetic);
    they are made once when the run starts, kept in the marker, and read back on resume and by the other ranks.

    Under torchrun only the main process clears the folder and writes the marker; call this on the main process
    first (`PartialState.main_process_first`), so the other ranks read the folder as it decided."""
    marker = folder / FINGERPRINT

    def recorded() -> dict[str, Any]:
        try:
            record = json.loads(marker.read_text())
            return record if isinstance(record, dict) else {}
        except (OSError, ValueError):  # absent, or cut short by a kill while written
            return {}

    record = recorded()
    same_run = record.get("fingerprint") == fingerprint
    # A process killed while saving leaves a partial checkpoint: only complete ones count (the Trainer
    # writes trainer_state.json last).
    checkpoints = sorted((p for p in folder.glob("checkpoint-*") if all((p / f).is_file() for f in CHECKPOINT_FILES)),
                         key=lambda p: int(p.name.split("-")[-1]))
    if resume and same_run and checkpoints:
        return str(checkpoints[-1]), record.get("decisions") or decide()
    if not is_main:  # the main process has started this run: its marker holds the decisions
        return None, record.get("decisions") or decide()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    decisions = decide()
    partial = marker.with_suffix(".partial")
    partial.write_text(json.dumps({"fingerprint": fingerprint, "decisions": decisions}) + "\n")
    partial.replace(marker)  # atomic: a reader sees the whole marker or none
    return None, decisions


def process_state(device: str) -> Any:
    """accelerate's process state, initialised as the Trainer will initialise it. Created first with its defaults,
    it stays single-process on CPU (`cpu=False` leaves gloo to the Trainer): under torchrun every rank then
    believed itself the main one and two ranks raced on the checkpoint folder."""
    from accelerate import PartialState

    return PartialState(cpu=device == "cpu")


def peak_memory_mib(device: str) -> float:
    """Peak memory of this process: the accelerator's allocator on CUDA, resident set size on CPU."""
    import torch

    if device == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def fit_probe_for(params: StageParams, train: pd.DataFrame, val: pd.DataFrame, base: BaseModel, device: str,
                  labels: list[str]) -> Probe:
    """The frozen-encoder probe on this run's train split, C chosen on val (gradus/probe.py; the head is the task
    type's)."""
    cfg = params.train
    probe = fit_probe(base.location, train, val, cfg.max_length, cfg.eval_batch_size, device, cfg.seed,
                      fit=task_type(params.model.task).fit_probe_head)
    learned = getattr(probe.head.model, "classes_", labels)
    if [str(label) for label in learned] != labels:
        raise DataError(f"the probe learned labels {list(learned)}, the run has {labels}")
    return probe


def probe_model(params: StageParams, base: BaseModel, labels: list[str], probe: Probe) -> Any:
    """The frozen base with the probe's logistic regression as its head: the probe as a servable classifier."""
    model = from_base(base.location, labels, probe.pooling, normalize=True, revision=params.model.revision,
                      problem_type=task_type(params.model.task).problem_type)
    set_head(model, probe.head.coef, probe.head.intercept)
    return model


def method_of(params: StageParams) -> tuple[str, str | None]:
    """(The method this run trains by, why it differs from train.method or None). A task type the frozen-encoder
    probe cannot answer (entities: one embedding per text cannot tag tokens) fine-tunes a new head under lp_ft and
    auto; train.method probe is refused for it, naming the fix."""
    method, task = params.train.method, task_type(params.model.task)
    if task.probe_heads or method == "finetune":
        return method, None
    if method == "probe":
        raise ConfigError(f"train.method=probe cannot train model.task={task.name}: the frozen-encoder probe reads "
                          "one embedding per text; use train.method finetune")
    return "finetune", (f"train.method {method}: the frozen-encoder probe cannot answer model.task {task.name} "
                        "(one embedding per text); fine-tuned a new head instead")


def initial_model(params: StageParams, base: BaseModel, labels: list[str], probe: Probe | None) -> Any:
    """The model fine-tuning starts from: the probe's (lp_ft), or the base with a new head (train.head; the task
    type's own head class where it is not a sequence classifier)."""
    import transformers

    task = task_type(params.model.task)
    if probe is not None and params.train.method == "lp_ft":
        return probe_model(params, base, labels, probe)
    if params.train.head == "pooled" and task.probe_heads:
        return from_base(base.location, labels, pooling_mode(Path(base.location)), normalize=False,
                         revision=params.model.revision, problem_type=task.problem_type)
    extra = {"problem_type": task.problem_type} if task.problem_type else {}
    return getattr(transformers, task.auto_model).from_pretrained(
        base.location, revision=params.model.revision, num_labels=len(labels),
        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
        use_safetensors=True, **extra,
    )


def resumable_trainer() -> type:
    """transformers' Trainer with one change: with group_by_length, each epoch's order comes from a generator seeded
    with (data seed, epoch). Stock, the length-grouped sampler draws from torch's global generator when the epoch
    starts, a state a resumed run cannot restore (a checkpoint holds the state at its save, mid-epoch): a run resumed
    in its fourth epoch trained on another order and ended 0.0015 away from the uninterrupted run (the tiny model,
    measured). Subclassed because TrainingArguments offers no generator for this sampler; accelerate's data loader
    calls the sampler's set_epoch before each epoch, a resumed one included."""
    import torch
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class EpochSeededSampler(LengthGroupedSampler):
        def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
            super().__init__(batch_size, lengths=lengths, generator=torch.Generator())
            self.seed = seed
            self.set_epoch(0)

        def set_epoch(self, epoch: int) -> None:
            self.generator.manual_seed(self.seed * 1_000_003 + epoch)

    class ResumableTrainer(Trainer):
        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            sampler = super()._get_train_sampler(train_dataset)
            if type(sampler) is LengthGroupedSampler:
                seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
                return EpochSeededSampler(sampler.batch_size, sampler.lengths, seed)
            return sampler

    return ResumableTrainer


def build_trainer(params: StageParams, train: pd.DataFrame, val: pd.DataFrame, base: BaseModel, device: str,
                  labels: list[str], resuming: bool, plan: TrainingPlan, model: Any,
                  precision: tuple[bool, bool] | None = None) -> tuple[Any, Any, EncodedTexts]:
    """Tokenizer, datasets, callbacks (early stopping, DVCLive) wired into a Trainer for `model`; `precision`
    (bf16, fp16) as the run recorded it."""
    from dvclive import Live
    from transformers import AutoTokenizer
    from transformers.integrations import DVCLiveCallback

    cfg, task = params.train, task_type(params.model.task)
    tokenizer = AutoTokenizer.from_pretrained(base.location, revision=params.model.revision)
    train_set = encode(train, tokenizer, task, labels, params)
    trainer = resumable_trainer()(
        model=model,
        args=training_arguments(cfg, device, params.paths.checkpoints, plan, task.primary_metric, precision),
        train_dataset=train_set, eval_dataset=encode(val, tokenizer, task, labels, params),
        data_collator=task.collator(tokenizer), compute_metrics=validation_metrics(task, labels),
        compute_loss_func=task.loss_function(train_set.labels, params),
    )
    trial = json.loads(os.environ[TRIAL_ENV]) if os.environ.get(TRIAL_ENV) else None
    for callback in trainer_callbacks(cfg, plan, task, trial):
        trainer.add_callback(callback)
    if trainer.is_world_process_zero():
        live = Live(params.paths.training_log, resume=resuming, save_dvc_exp=False, dvcyaml=None, report=None)
        trainer.add_callback(DVCLiveCallback(live=live))
    return trainer, tokenizer, train_set


def fine_tune(params: StageParams, train: pd.DataFrame, val: pd.DataFrame, out: Path,
              split_files: list[Path] | None = None) -> dict[str, Any]:
    """Fine-tune (resuming this run's last checkpoint if any); save weights (safetensors), tokenizer and
    label map into `out` on the main process; return a training summary."""
    from transformers import set_seed

    cfg, task = params.train, task_type(params.model.task)
    base = resolve_base(params.model.base, params.model.revision)
    device = pick_device(cfg.device)
    state = process_state(device)
    set_seed(cfg.seed)
    labels = task.vocabulary(train)
    method, method_note = method_of(params)
    probe = fit_probe_for(params, train, val, base, device, labels) if method != "finetune" else None
    if cfg.method == "probe":
        assert probe is not None
        return save_probe(params, base, device, labels, probe, out, len(train), val)
    set_seed(cfg.seed)  # the same initial head and data order with or without a probe fitted first
    fingerprint = run_fingerprint(params, split_files or [])
    checkpoints = Path(params.paths.checkpoints)
    with state.main_process_first():
        resume_from, decisions = checkpoint_to_resume(
            checkpoints, fingerprint, cfg.resume, state.is_main_process,
            lambda: dict(zip(("bf16", "fp16"), mixed_precision(cfg, device), strict=True)))
    plan = plan_training(cfg, len(train), len(labels), state.num_processes)
    trainer, tokenizer, train_set = build_trainer(params, train, val, base, device, labels, resume_from is not None,
                                                  plan, initial_model(params, base, labels, probe),
                                                  (bool(decisions["bf16"]), bool(decisions["fp16"])))
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    wall = time.perf_counter() - started
    stopping = _stopping(trainer, plan, result, task)  # before the final evaluation joins the log history
    final_eval = trainer.evaluate()
    summary = _summary(base, device, labels, train_set, result, wall, final_eval, trainer.state) | stopping
    # The epoch of the Trainer's own best checkpoint (the model kept), not a second notion of "best".
    summary["best_epoch"] = next((e["epoch"] for e in stopping["evaluations"] if e["step"] == summary["best_step"]),
                                 None)
    summary |= {"max_length": cfg.max_length,  # how the model's inputs must be tokenized (LoadedModel)
                **({"stride": params.entities.stride} if task.windowed else {}),
                **({"method_note": method_note} if method_note else {}),
                "precision": "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32",
                "resumed_from": Path(resume_from).name if resume_from else None,
                "peak_memory_mib": peak_memory_mib(device), "world_size": trainer.args.world_size}
    summary |= method_fields(params, probe, summary)
    model = trainer.model
    if summary["chosen"] == "probe":  # auto, and fine-tuning did not beat the probe on val
        model = probe_model(params, base, labels, probe)
        summary |= {f"val_{key}": round(value, 6) for key, value in probe.val_scores.items()}
    if trainer.is_world_process_zero():
        # model.save_pretrained, not trainer.save_model: the latter also writes training_args.bin, a pickle.
        save_model(model, tokenizer, labels, out)
        summary |= save_decision(params, model, tokenizer, val, labels, out, device)
    return summary


def save_decision(params: StageParams, model: Any, tokenizer: Any, val: pd.DataFrame, labels: list[str], out: Path,
                  device: str) -> dict[str, Any]:
    """The task type's decoding decision (thresholds) from the kept model's validation scores, written as
    decision.json beside the weights; nothing for a type that decodes without one."""
    task = task_type(params.model.task)
    cfg = params.train

    def scores() -> Any:
        probabilities, _ = forward(model.to(device).eval(), tokenizer, list(val["text"]), cfg.eval_batch_size,
                                   cfg.max_length)
        return probabilities

    decision = task.decision(task.encode_targets(val, labels), scores, labels, params)
    if not decision:
        return {}
    write_json(decision, out / DECISION_FILE)
    return {"decision": decision}


def save_model(model: Any, tokenizer: Any, labels: list[str], out: Path) -> None:
    """Weights (safetensors), tokenizer and label map: the model folder every later stage reads."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(str(out))
    save_label_map(out, labels)


def method_fields(params: StageParams, probe: Probe | None, summary: dict[str, Any]) -> dict[str, Any]:
    """How the model was made, the probe beside it on the validation split, and which of the two `auto` keeps
    (the better validation primary metric, macro-F1 for one label per text; a tie goes to the probe, the cheaper to
    retrain). The probe's validation figure is slightly optimistic: its C was chosen on the same split."""
    cfg, task = params.train, task_type(params.model.task)
    key, method = task.primary_metric, method_of(params)[0]
    probe_score = probe.val_scores.get(key, 0.0) if probe is not None else 0.0
    head = ("pooled" if method != "finetune" else cfg.head) if task.probe_heads else "token"
    fields: dict[str, Any] = {"method": method, "head": head, "chosen": "finetune"}
    if probe is None:
        return fields
    fields |= {"probe": probe.summary(), f"probe_val_{key}": round(probe_score, 6)}
    if cfg.method == "probe":
        return fields | {"chosen": "probe"}
    tuned = summary.get(f"val_{key}", 0.0)
    fields |= {f"finetuned_val_{key}": tuned, "finetuning_beat_probe": bool(tuned > probe_score)}
    if cfg.method == "auto" and not fields["finetuning_beat_probe"]:
        fields["chosen"] = "probe"
    return fields


def save_probe(params: StageParams, base: BaseModel, device: str, labels: list[str], probe: Probe,
               out: Path, train_rows: int, val: pd.DataFrame) -> dict[str, Any]:
    """train.method: probe: the frozen encoder and the probe's head, saved as any trained model is, with a
    training log of its one validation measurement (the stage's DVC outputs exist whatever the method)."""
    from accelerate import PartialState
    from dvclive import Live
    from transformers import AutoTokenizer

    summary = {"base_model": base.name, "base_model_revision": base.revision, "device": device,
               "num_labels": len(labels), "train_rows": train_rows, "epochs": 0.0, "steps": 0, "best_step": 0,
               "stopped_early": False, "wall_time_s": round(probe.seconds, 2), "samples_per_s": 0.0,
               "tokens_per_s": 0.0, **{f"val_{key}": round(value, 6) for key, value in probe.val_scores.items()},
               "stop_reason": "train.method: probe (no fine-tuning)",
               "evaluations": [], "max_length": params.train.max_length, "precision": "fp32", "resumed_from": None,
               "peak_memory_mib": peak_memory_mib(device), "world_size": PartialState().num_processes}
    summary |= method_fields(params, probe, summary)
    if PartialState().is_main_process:
        tokenizer = AutoTokenizer.from_pretrained(base.location, revision=params.model.revision)
        model = probe_model(params, base, labels, probe)
        save_model(model, tokenizer, labels, out)
        summary |= save_decision(params, model, tokenizer, val, labels, out, device)
        with Live(params.paths.training_log, save_dvc_exp=False, dvcyaml=None, report=None) as live:
            for key, value in probe.val_scores.items():
                live.log_metric(f"eval/{key}", round(value, 6))
    return summary


def _stopping(trainer: Any, plan: TrainingPlan, result: Any, task: TaskType) -> dict[str, Any]:
    """Why training ended, the plan it followed, and every evaluation (to see whether it was still improving)."""
    reason = "completed the planned epochs"
    for callback in trainer.callback_handler.callbacks:  # a resumed run holds restored instances: look them up
        reason = getattr(callback, "stop_reason", None) or reason
    if trainer.args.max_steps > 0 and result.global_step >= trainer.args.max_steps:
        reason = f"train.max_steps {trainer.args.max_steps} reached"
    key = task.primary_metric
    evaluations = [{"epoch": round(entry["epoch"], 3), "step": entry["step"],
                    "val_loss": round(entry["eval_loss"], 5), f"val_{key}": round(entry[f"eval_{key}"], 5)}
                   for entry in trainer.state.log_history if f"eval_{key}" in entry]
    return {"epochs_planned": plan.epochs, "steps_per_epoch": plan.steps_per_epoch, "eval_steps": plan.eval_steps,
            "patience_evaluations": plan.patience_evaluations, "epoch_rule": plan.rule, "stop_reason": reason,
            "evaluations": evaluations}


def _summary(base: BaseModel, device: str, labels: list[str], train_set: EncodedTexts, result: Any,
             wall: float, final_eval: dict[str, float], state: Any) -> dict[str, Any]:
    tokens = sum(len(ids) for ids in train_set.encodings["input_ids"])
    epochs = float(result.metrics.get("epoch", 0.0))
    best = state.best_model_checkpoint
    return {
        "base_model": base.name,
        "base_model_revision": base.revision,
        "device": device,
        "num_labels": len(labels),
        "train_rows": len(train_set),
        "epochs": epochs,
        "steps": int(result.global_step),
        "best_step": int(best.rsplit("-", 1)[-1]) if best else int(result.global_step),
        "stopped_early": bool(state.max_steps and result.global_step < state.max_steps),
        "train_loss": round(float(result.training_loss), 6),
        "wall_time_s": round(wall, 2),
        "samples_per_s": round(float(result.metrics.get("train_samples_per_second", 0.0)), 2),
        "tokens_per_s": round(tokens * epochs / wall, 1) if wall else 0.0,
        # The task type's validation scores (one label per text: accuracy, macro-F1).
        **{f"val_{key[5:]}": round(value, 6) for key, value in final_eval.items()
           if key.startswith("eval_") and key not in NOT_SCORES},
    }


def run(params: StageParams) -> dict[str, Any]:
    """Fine-tune on the train split, select on val, write the model folder and a training summary."""
    splits = Path(params.paths.splits)
    files = [splits / f"{name}.parquet" for name in ("train", "val")]
    train, val = (pd.read_parquet(path) for path in files)
    if train.empty:
        raise DataError(f"{files[0]}: no training rows; check the validate and split stages")
    model_dir = Path(params.paths.model)
    state = process_state(pick_device(params.train.device))  # first, before anything asks for the rank
    try:
        summary = fine_tune(params, train, val, model_dir, files)
        if state.is_main_process:
            # The full summary (base model name and revision included) travels with the model; the DVC metric
            # file keeps the numbers only, so `dvc metrics show` / `dvc exp show` stay readable.
            write_json(summary, model_dir / TRAINING_SUMMARY)
            numbers = {k: v for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)}
            write_json(numbers, Path(params.paths.train_summary))
            print(json.dumps(summary, indent=2))
            # Plainly, in the stage's log (the flow's console summary says it too: gradus/reports.py).
            if "finetuning_beat_probe" in summary:
                task = task_type(params.model.task)
                beat = "beat" if summary["finetuning_beat_probe"] else "did NOT beat"
                print(f"fine-tuning {beat} the frozen-encoder probe on the validation split "
                      f"({task.primary_metric_name} {summary[f'finetuned_val_{task.primary_metric}']:.4f} vs "
                      f"{summary[f'probe_val_{task.primary_metric}']:.4f}); kept: {summary['chosen']}")
        # Under torchrun the other ranks reach here while rank 0 still writes the model: wait for it, then close
        # the process group, or a rank exits with gloo's threads alive and can abort ("terminate called without an
        # active exception", exit -6), failing the stage after a finished training.
        state.wait_for_everyone()
    finally:
        state.destroy_process_group()  # a no-op without a process group (one process)
    primary = f"val_{task_type(params.model.task).primary_metric}"
    return {k: summary[k] for k in ("device", "steps", "samples_per_s", primary, "method", "chosen")}
