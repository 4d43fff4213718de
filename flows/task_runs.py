"""The Prefect task runs of the pipeline: thin wrappers that add logging, retries on I/O and the flow run's
id to the plain functions below them (DVC stages, registration, alias moves)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from gradus.config.params import load_params
from gradus.config.pipeline import PARAMS_FILE
from gradus.pipeline import repro_stage, run_dvc
from gradus.registry.candidates import apply_gate, register_version


@task(name="dvc-stage", task_run_name="{stage}")
def run_dvc_stage(stage: str, project_dir: str, force: bool = False) -> dict[str, object]:
    """One pipeline stage as one Prefect task run; no retries: a stage failure is not transient."""
    logger = get_run_logger()
    outcome = repro_stage(stage, Path(project_dir), logger.info, force)
    logger.info("stage %s %s in %.1fs", stage, "ran" if outcome.ran else "was up to date", outcome.seconds)
    return asdict(outcome)


@task(name="dvc-push", retries=2, retry_delay_seconds=5)
def push_outputs(project_dir: str) -> None:
    """Push every tracked output to the DVC remote (I/O, so retried)."""
    logger = get_run_logger()
    run_dvc(["push"], Path(project_dir), logger.info)


def _flow_run_id() -> str:
    from prefect.runtime import flow_run

    return f"prefect:{flow_run.id}" if flow_run.id else "manual"


@task(name="register-model", retries=2, retry_delay_seconds=5)
def register_model(project_dir: str, why: str | None = None, run_dir: str | None = None) -> dict[str, Any]:
    """Register the trained model; retried on I/O errors, which is safe because registering is idempotent.
    run_dir: the run's workspace, whose params.yaml (with the run's overrides) and outputs are the run's."""
    root, outputs = Path(project_dir), Path(run_dir or project_dir)
    result = register_version(root, load_params(outputs / PARAMS_FILE), _flow_run_id(), why, outputs)
    get_run_logger().info("model version %s (%s)", result["version"], "new" if result["created"] else "existing")
    return result


@task(name="apply-gate")
def move_aliases(project_dir: str, version: str, run_dir: str | None = None) -> dict[str, Any]:
    """Alias changes are not retried: a compare-and-swap conflict needs a fresh gate verdict, not a retry."""
    root, outputs = Path(project_dir), Path(run_dir or project_dir)
    return apply_gate(root, load_params(outputs / PARAMS_FILE), version, _flow_run_id(), run_dir=outputs)
