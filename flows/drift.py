"""The drift monitor as a Prefect flow: Evidently reports on a new batch, and a retrain when it matters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.deployments import run_deployment
from prefect.events import emit_event

from gradus.config.params import load_params
from gradus.config.pipeline import PARAMS_FILE
from gradus.events import DRIFT_RETRAIN
from gradus.monitoring.drift import run_monitor
from gradus.monitoring.records import MonitorRecords
from gradus.registry.versions import project_registry
from gradus.reports import drift_markdown


@task(name="drift-report")
def check_drift(project_dir: str, current: str) -> dict[str, Any]:
    """Load the batch and the champion's training data, run the Evidently reports, decide."""
    root = Path(project_dir).resolve()
    return run_monitor(root, load_params(root / PARAMS_FILE), current)


@flow(name="drift_monitor", log_prints=True)
def drift_monitor(current: str, project_dir: str = ".", trigger: bool = True) -> dict[str, Any]:
    """Compare `current` (a file, glob or s3:// prefix of new text) with the champion's training data; start
    the training deployment when drift is significant, the batch big enough and the cooldown over."""
    logger = get_run_logger()
    root = Path(project_dir).resolve()
    params = load_params(root / PARAMS_FILE)
    summary = check_drift(str(root), current)
    decision, triggered = summary["decision"], None
    if decision["retrain"] and trigger:
        triggered = start_retrain(root, summary)
        decision["triggered_flow_run"] = triggered
    elif decision["retrain"]:
        logger.info("retrain warranted but trigger=False: not starting %s", params.drift.training_deployment)
    logger.info("drift decision: %s (%s)", "retrain" if decision["retrain"] else "no retrain",
                "; ".join(decision["reasons"]))
    create_markdown_artifact(key="drift-report", markdown=drift_markdown(summary, triggered),
                             description="Drift per signal, the retrain decision and links to Evidently reports")
    return summary


@task(name="start-retrain")
def start_retrain(root: Path, summary: dict[str, Any]) -> str | None:
    """Claim the batch (create-only, so concurrent monitors start one retrain), then run the training
    deployment with the reason and the new data; give the claim back if the run cannot be created."""
    logger = get_run_logger()
    params = load_params(root / PARAMS_FILE)
    registry = project_registry(root, params)
    records = MonitorRecords(registry.store)
    reason = f"drift on batch {summary['current']}: " + "; ".join(summary["decision"]["reasons"])
    if not records.claim_trigger(summary["batch"], {"current": summary["current"], "reason": reason}):
        logger.info("batch %s already triggered a retrain; not starting another", summary["batch"][:12])
        summary["decision"]["retrain"] = False
        return None
    overrides: dict[str, Any] = {"reason": reason}
    if summary["labeled"]:
        # The new data goes into that retrain; into the data catalogue for later runs too unless the setting says no.
        overrides["add_sources"] = [summary["current"]]
        overrides["keep_sources"] = params.drift.keep_labeled_batches
    try:
        run = run_deployment(params.drift.training_deployment, parameters={"overrides": overrides}, timeout=0)
    except Exception:
        records.release_trigger(summary["batch"])
        raise
    registry.audit("retrain-triggered", run=str(run.id), reason=reason, outcome="ok",
                   details={"batch": summary["batch"], "current": summary["current"]})
    emit_event(event=DRIFT_RETRAIN, resource={"prefect.resource.id": f"gradus.batch.{summary['batch']}"},
               payload={"reason": reason, "flow_run": str(run.id), "current": summary["current"]})
    logger.info("started %s: flow run %s", params.drift.training_deployment, run.id)
    return str(run.id)
