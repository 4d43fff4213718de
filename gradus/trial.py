"""The train stage's side of a hyperparameter search trial (`gradus tune`, gradus/tuning.py): which trial this
run is, and the callback that reports to it and stops the run when the study prunes it."""

from __future__ import annotations

from typing import Any

# Set by `gradus tune` for the train stage of one trial: JSON {storage, study, trial_id, pruner}.
TRIAL_ENV = "GRADUS_TUNE_TRIAL"


def search_trial_report(spec: dict[str, Any]) -> Any:
    """A callback reporting each evaluation's val macro-F1 to the Optuna trial this run is, which stops the run
    when the study's pruner says it trails the earlier trials (the model kept is still its best checkpoint)."""
    import optuna
    from transformers.trainer_callback import TrainerCallback

    class SearchTrialReport(TrainerCallback):
        stop_reason: str | None = None

        def __init__(self) -> None:
            # The pruner is not stored with a study: the search passes its settings so both sides judge alike.
            pruner = (optuna.pruners.MedianPruner(**spec["pruner"]) if spec.get("pruner")
                      else optuna.pruners.NopPruner())
            study = optuna.load_study(study_name=spec["study"], storage=spec["storage"], pruner=pruner)
            self.trial = optuna.trial.Trial(study, spec["trial_id"])
            self.evaluations = 0

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float],
                        **kwargs: Any) -> None:
            if "eval_macro_f1" not in metrics or self.stop_reason or not state.is_world_process_zero:
                return
            self.trial.report(metrics["eval_macro_f1"], self.evaluations)
            self.evaluations += 1
            if self.trial.should_prune():
                control.should_training_stop = True
                self.stop_reason = "pruned by the hyperparameter search (below the median of earlier trials)"
                self.trial.set_user_attr("pruned_at_step", state.global_step)

    return SearchTrialReport()
