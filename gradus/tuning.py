"""Hyperparameter search: Optuna proposes train params, and every trial is a DVC experiment.

Each trial runs `dvc exp run --temp -n <study>-<n> -S train.KEY=VALUE ... train` (the train stage and what
it needs, in a temporary copy of the project: the workspace and params.yaml are never touched), so
`dvc exp show` compares the trials and `dvc exp apply <name>` takes one. The train stage reports each
evaluation's val macro-F1 back to the study (tasks/train.py, SearchTrialReport), so Optuna's median pruner
can stop a trial that trails the earlier ones mid-run. The objective is the trial's best val macro-F1 (the
test split stays out of the choice). The study lives in .gradus/tune.db: a search given the same study name
continues where it stopped. The result is a proposal (paths.tune/<study>.json), never a change to params.yaml.

Written by hand on top of Optuna's ask/tell and DVC's experiments because neither drives the other: the HF
Trainer's hyperparameter_search runs trials in-process, outside DVC, so they would not be experiments.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gradus.config.operations import SearchDimension
from gradus.config.params import Params, load_params
from gradus.errors import GradusError
from gradus.io import write_json
from gradus.pipeline import StageFailed, run_dvc
from gradus.trial import TRIAL_ENV

STORAGE = ".gradus/tune.db"


def suggest(trial: Any, space: dict[str, SearchDimension]) -> dict[str, Any]:
    """The trial's value for every searched key, as `train.KEY` -> value."""
    values: dict[str, Any] = {}
    for key, dim in space.items():
        if dim.choices is not None:
            values[f"train.{key}"] = trial.suggest_categorical(key, list(dim.choices))
        elif dim.integer:
            values[f"train.{key}"] = trial.suggest_int(key, int(dim.low), int(dim.high))
        else:
            values[f"train.{key}"] = trial.suggest_float(key, float(dim.low), float(dim.high), log=dim.log)
    return values


def best_reported(trial: Any) -> float | None:
    """The objective: a trial's best reported val macro-F1 (None before its first evaluation); complete and
    pruned trials are read the same way."""
    return max(trial.intermediate_values.values()) if trial.intermediate_values else None


def _value(value: Any) -> str:
    """A value as `-S` writes it into params.yaml (YAML): floats short but exact enough to rerun."""
    return f"{value:.6g}" if isinstance(value, float) else json.dumps(value) if isinstance(value, str) else str(value)


def experiment_args(name: str, values: dict[str, Any], fixed: list[str], copy_paths: list[str]) -> list[str]:
    """`dvc exp run` arguments of one trial: the searched values, then the search's fixed overrides."""
    args = ["exp", "run", "--temp", "--name", name]
    for path in copy_paths:
        args += ["--copy-paths", path]
    for key, value in values.items():
        args += ["--set-param", f"{key}={_value(value)}"]
    for override in fixed:
        args += ["--set-param", override]
    return [*args, "train"]


def _untracked_inputs(project: Path, params: Params) -> list[str]:
    """The inputs folder when git does not track it (a temp copy of the project holds tracked files only)."""
    import subprocess

    inputs = project / params.paths.inputs
    if not inputs.exists():
        return []
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", params.paths.inputs], cwd=project,
                             capture_output=True, text=True).returncode == 0
    return [] if tracked else [params.paths.inputs]


def search(project_dir: str | Path = ".", overrides: list[str] | None = None, study_name: str | None = None,
           trials: int | None = None, timeout_minutes: float | None = None,
           log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the search; write and return the proposal. `overrides` set the search itself (tune.*) and are
    passed to every trial (any other key), so one search can fix, say, model.base."""
    import optuna

    project = Path(project_dir).resolve()
    overrides = list(overrides or [])
    params = load_params(project / "params.yaml", overrides)
    cfg = params.tune
    trials = trials or cfg.trials
    timeout_minutes = timeout_minutes if timeout_minutes is not None else cfg.timeout_minutes
    name = study_name or datetime.now(UTC).strftime("tune-%Y%m%d-%H%M%S")
    fixed = [o for o in overrides if not o.startswith("tune.")]
    storage_path = project / STORAGE
    storage_path.parent.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{storage_path}"
    pruner_settings = ({"n_startup_trials": cfg.startup_trials, "n_warmup_steps": cfg.warmup_evaluations}
                       if cfg.pruning else None)
    study = optuna.create_study(
        study_name=name, storage=storage, direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=cfg.seed),
        pruner=optuna.pruners.MedianPruner(**pruner_settings) if pruner_settings else optuna.pruners.NopPruner())
    copy_paths = _untracked_inputs(project, params)
    failures: list[str] = []

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, cfg.space)
        experiment = f"{name}-{trial.number:03d}"
        trial.set_user_attr("experiment", experiment)
        log(f"trial {trial.number} ({experiment}): " + ", ".join(f"{k}={_value(v)}" for k, v in values.items()))
        spec = {"storage": storage, "study": name, "trial_id": trial._trial_id,  # no public id; Optuna's own
                "pruner": pruner_settings}
        try:
            run_dvc(experiment_args(experiment, values, fixed, copy_paths), project, log,
                    env={TRIAL_ENV: json.dumps(spec)})
            reported = study._storage.get_trial(trial._trial_id)
            best = best_reported(reported)
            if best is None:
                raise StageFailed(f"{experiment} reported no evaluation; see its output above")
        except StageFailed as exc:  # every failed trial is listed in the proposal, whichever way it failed
            failures.append(f"trial {trial.number}: {exc}")
            raise
        if "pruned_at_step" in reported.user_attrs:
            log(f"trial {trial.number} pruned at step {reported.user_attrs['pruned_at_step']} (best {best:.4f})")
            raise optuna.TrialPruned()
        log(f"trial {trial.number}: val macro-F1 {best:.4f}")
        return best

    started = time.monotonic()
    done_before = len(study.trials)
    study.optimize(objective, n_trials=trials, timeout=timeout_minutes * 60 if timeout_minutes else None,
                   catch=(StageFailed,))
    proposal = _proposal(study, name, fixed, storage, round(time.monotonic() - started, 1),
                         len(study.trials) - done_before, trials, timeout_minutes, failures)
    out = project / params.paths.tune / f"{name}.json"
    write_json(proposal, out)
    proposal["file"] = str(out.relative_to(project))
    if proposal["best"] is None:
        raise GradusError(f"search {name}: no trial completed ({'; '.join(failures) or 'all pruned'}); "
                          f"see {proposal['file']}")
    return proposal


def _proposal(study: Any, name: str, fixed: list[str], storage: str, seconds: float, ran: int, trials: int,
              timeout_minutes: float | None, failures: list[str]) -> dict[str, Any]:
    """The search's record: every trial, and the best one as the params to adopt (by hand)."""
    import optuna

    rows = [{"number": t.number, "experiment": t.user_attrs.get("experiment"), "state": t.state.name.lower(),
             "val_macro_f1": best_reported(t),
             "evaluations": len(t.intermediate_values), "params": t.params,
             "seconds": round(t.duration.total_seconds(), 1) if t.duration else None} for t in study.trials]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value) if complete else None
    proposal: dict[str, Any] = {
        "study": name, "storage": storage, "objective": "best val macro-F1 of the trial's evaluations",
        "budget": {"trials": trials, "timeout_minutes": timeout_minutes}, "trials_this_run": ran,
        "seconds_this_run": seconds, "fixed_overrides": fixed, "failures": failures, "trials": rows, "best": None,
    }
    if best is not None:
        experiment = best.user_attrs["experiment"]
        proposal["best"] = {
            "number": best.number, "experiment": experiment, "val_macro_f1": best.value,
            "params": {f"train.{k}": v for k, v in best.params.items()},
            "adopt": [f"dvc exp apply {experiment}",
                      "gradus run " + " ".join(f"--set train.{k}={_value(v)}" for k, v in best.params.items())],
        }
    return proposal
