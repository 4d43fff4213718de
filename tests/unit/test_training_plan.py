"""The training recipe's arithmetic: the epoch budget, the evaluation cadence and the early-stopping rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradus.config.params import load_params
from tasks.train import (
    CHECKPOINT_FILES,
    FINGERPRINT,
    MAX_EVAL_INTERVAL,
    EarlyStopRule,
    checkpoint_to_resume,
    plan_training,
)

ROOT = Path(__file__).resolve().parents[2]


def train_config(*overrides: str):
    return load_params(ROOT / "params.yaml", list(overrides)).train


def test_auto_epochs_scale_with_labels_and_rows() -> None:
    cfg = train_config("train.min_steps_per_class=30", "train.min_epochs=3", "train.max_epochs=20")
    banking = plan_training(cfg, rows=9002, num_labels=77)
    assert banking.steps_per_epoch == 282 and banking.epochs == 9  # 2,310 steps / 282 = 8.2 -> 9
    assert "77 labels" in banking.rule and "9 epochs" in banking.rule
    fewer_labels = plan_training(cfg, rows=9002, num_labels=20)
    assert fewer_labels.epochs == 3  # 600 / 282 = 2.1, raised to the floor
    more_rows = plan_training(cfg, rows=90_020, num_labels=77)
    assert more_rows.epochs == 3  # ten times the rows: the floor, not 9 epochs
    huge_label_set = plan_training(cfg, rows=2_000, num_labels=500)
    assert huge_label_set.epochs == 20  # 15,000 / 63 = 238 epochs, capped


def test_world_size_and_accumulation_count_as_the_trainer_counts() -> None:
    cfg = train_config("train.gradient_accumulation_steps=3")
    plan = plan_training(cfg, rows=1000, num_labels=10, world_size=2)
    # 500 rows per rank -> 16 batches of 32 -> 6 optimizer steps (the last one partial)
    assert plan.steps_per_epoch == 6


def test_set_epochs_and_eval_steps_win_over_auto() -> None:
    plan = plan_training(train_config("train.epochs=2.5", "train.eval_steps=100"), rows=9002, num_labels=77)
    assert plan.epochs == 2.5 and plan.eval_steps == 100 and plan.rule == "set: 2.5 epochs"
    # patience 2 epochs of 282 steps, evaluated every 100 steps -> 6 evaluations
    assert plan.patience_evaluations == 6


def test_eval_cadence_is_an_epoch_split_in_parts_of_at_most_the_interval() -> None:
    cfg = train_config()
    short = plan_training(cfg, rows=9002, num_labels=77)
    assert short.eval_steps == short.steps_per_epoch == 282 and short.patience_evaluations == 2
    long = plan_training(cfg, rows=200_000, num_labels=77)  # 6,250 steps an epoch
    assert long.eval_steps <= MAX_EVAL_INTERVAL and long.steps_per_epoch / long.eval_steps <= 7
    assert long.patience_evaluations == 2 * 7  # still two epochs of patience


def test_early_stopping_off() -> None:
    assert plan_training(train_config("train.early_stopping_patience=0"), 9002, 77).patience_evaluations == 0


def test_never_stops_while_val_loss_still_falls_beyond_tolerance() -> None:
    rule = EarlyStopRule(patience=2, min_delta=0.001, loss_tolerance=0.01)
    # Macro-F1 flat from the second evaluation on, loss falling 5 % each time: never a stop.
    for i in range(10):
        assert rule.improved(0.90, 1.0 * 0.95**i)
    assert rule.waited == 0


def test_stops_after_patience_when_neither_signal_improves() -> None:
    rule = EarlyStopRule(patience=2, min_delta=0.001, loss_tolerance=0.01)
    assert rule.improved(0.80, 0.70)
    assert rule.improved(0.85, 0.72)        # F1 up, loss up: still improving
    assert not rule.improved(0.8505, 0.695)  # F1 +0.0005 (<= min_delta), loss -0.7 % (<= 1 %)
    assert rule.waited == 1
    assert not rule.improved(0.84, 0.75)
    assert rule.waited == 2 >= rule.patience
    assert rule.best_f1 == pytest.approx(0.8505) and rule.best_loss == pytest.approx(0.695)
    assert rule.improved(0.86, 0.75)        # a real F1 gain resets the count
    assert rule.waited == 0


def test_a_trial_trailing_the_earlier_ones_is_pruned_through_the_shared_study(tmp_path: Path) -> None:
    """The train stage's side of `gradus tune`: real Optuna storage, as a trial's own process sees it."""
    import optuna
    from transformers import TrainerControl, TrainerState

    from tasks.train import search_trial_report

    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    for score in (0.8, 0.9):  # two earlier trials that reached these val macro-F1 at evaluation 0
        trial = study.ask()
        trial.report(score, 0)
        study.tell(trial, score)
    current = study.ask()
    spec = {"storage": storage, "study": "s", "trial_id": current._trial_id,
            "pruner": {"n_startup_trials": 1, "n_warmup_steps": 0}}
    report = search_trial_report(spec)
    state, control = TrainerState(), TrainerControl()
    state.global_step = 40
    report.on_evaluate(None, state, control, {"eval_macro_f1": 0.95, "eval_loss": 0.3})
    assert not control.should_training_stop  # above the median: keeps training
    report.on_evaluate(None, state, control, {"eval_macro_f1": 0.2, "eval_loss": 2.0})
    assert not control.should_training_stop  # evaluation 1: no earlier trial reported there, nothing to compare
    fresh = study.ask()
    report = search_trial_report(spec | {"trial_id": fresh._trial_id})
    report.on_evaluate(None, state, control, {"eval_macro_f1": 0.3, "eval_loss": 2.0})
    assert control.should_training_stop and "pruned" in report.stop_reason
    stored = study._storage.get_trial(fresh._trial_id)
    assert stored.intermediate_values == {0: 0.3} and stored.user_attrs["pruned_at_step"] == 40


def fp32() -> dict[str, bool]:  # a run's decisions as decide() returns them
    return {"bf16": False, "fp16": False}


def bf16() -> dict[str, bool]:
    return {"bf16": True, "fp16": False}


def test_a_run_keeps_the_precision_it_started_with_whatever_a_later_measurement_says(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    assert checkpoint_to_resume(folder, "run-a", True, True, fp32) == (None, fp32())
    for name in CHECKPOINT_FILES:
        (folder / "checkpoint-10").mkdir(exist_ok=True)
        (folder / "checkpoint-10" / name).write_text("{}")
    # Resumed on a busier machine, where measuring would now pick bf16: the run keeps fp32.
    assert checkpoint_to_resume(folder, "run-a", True, True, bf16) == (str(folder / "checkpoint-10"), fp32())
    # Another rank of a fresh run takes the main process's decision, not its own measurement.
    assert checkpoint_to_resume(folder, "run-a", False, False, bf16) == (None, fp32())
    # A new run decides afresh.
    assert checkpoint_to_resume(folder, "run-b", True, True, bf16) == (None, bf16())


def test_resume_only_from_complete_checkpoints_of_the_same_run(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    assert checkpoint_to_resume(folder, "run-a", True, True, fp32)[0] is None  # nothing yet: marker written
    for step in (10, 20):
        for name in CHECKPOINT_FILES if step == 10 else CHECKPOINT_FILES[:-1]:  # checkpoint-20 cut short
            (folder / f"checkpoint-{step}").mkdir(exist_ok=True)
            (folder / f"checkpoint-{step}" / name).write_text("{}")
    assert checkpoint_to_resume(folder, "run-a", True, False, bf16)[0] == str(folder / "checkpoint-10")
    assert checkpoint_to_resume(folder, "run-a", False, False, bf16)[0] is None
    assert (folder / "checkpoint-10").is_dir()  # only the main process clears
    assert checkpoint_to_resume(folder, "run-b", True, True, fp32)[0] is None
    assert not (folder / "checkpoint-10").exists()


def test_a_marker_cut_short_by_a_kill_starts_a_fresh_run(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    (folder / "checkpoint-10").mkdir(parents=True)
    for name in CHECKPOINT_FILES:
        (folder / "checkpoint-10" / name).write_text("{}")
    (folder / FINGERPRINT).write_text("")
    assert checkpoint_to_resume(folder, "run-a", True, True, fp32)[0] is None
    assert not (folder / "checkpoint-10").exists()
    assert checkpoint_to_resume(folder, "run-a", True, True, fp32)[0] is None  # the marker is whole again
    assert json.loads((folder / FINGERPRINT).read_text()) == {"fingerprint": "run-a", "decisions": fp32()}
