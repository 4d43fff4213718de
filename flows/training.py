"""The training pipeline as a Prefect flow: each DVC stage is one task run, overrides are typed parameters."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from pydantic import BaseModel, ConfigDict, Field

from flows.task_runs import move_aliases, push_outputs, register_model, run_dvc_stage
from gradus.catalogue import add_to_catalogue, read_catalogue, source_location
from gradus.config.params import Params, load_params, optional_override
from gradus.config.pipeline import PARAMS_FILE, Source, TrainConfig
from gradus.events import MODEL_CANDIDATE
from gradus.io import read_json
from gradus.modeling import TRAINING_SUMMARY
from gradus.registry.versions import project_registry
from gradus.reports import compression_markdown, metrics_markdown, validation_markdown
from gradus.stages import STAGES
from gradus.workspace import Workspace, run_workspace

# A number in the UI form (unset keeps params.yaml's value, `auto` by default: the budget from the data).
Epochs = Annotated[Annotated[float, Field(gt=0)] | None, Field(description="train.epochs (unset: params.yaml's)")]
LearningRate = optional_override(TrainConfig, "learning_rate", "train")
BatchSize = optional_override(TrainConfig, "batch_size", "train")
MaxLength = optional_override(TrainConfig, "max_length", "train")
Seed = optional_override(TrainConfig, "seed", "train")
TRAIN_FIELDS = ("epochs", "learning_rate", "batch_size", "max_length", "seed")


class TrainingOverrides(BaseModel):
    """What a person may change for one run from the Prefect UI; unset fields keep params.yaml's value."""

    model_config = ConfigDict(extra="forbid")

    epochs: Epochs = None
    learning_rate: LearningRate = None
    batch_size: BatchSize = None
    max_length: MaxLength = None
    seed: Seed = None
    base_model: str | None = Field(None, description="model.base: 'packaged', a folder or a hub id")
    extra: list[str] = Field(default_factory=list,
                             description="any other params.yaml key as KEY=VALUE, e.g. split.test_fraction=0.2")
    add_sources: list[str] = Field(default_factory=list,
                                   description="labeled files, globs or s3:// prefixes this run also trains on")
    keep_sources: bool = Field(False, description="keep add_sources in the data catalogue (paths.catalogue), so "
                                                  "later runs train on them too; else this run only")
    reason: str | None = Field(None, description="why this run was started (kept in the registry's audit log)")

    def dotted(self) -> list[str]:
        """The overrides as params.yaml dotted assignments."""
        named = {name: f"train.{name}" for name in TRAIN_FIELDS} | {"base_model": "model.base"}
        values = [f"{key}={getattr(self, field)}" for field, key in named.items() if getattr(self, field) is not None]
        return values + list(self.extra)


def run_name() -> str:
    """This flow run as a person finds it in the UI (the workspace pool names the runs it waits for)."""
    from prefect.runtime import flow_run

    return f"{flow_run.flow_name}/{flow_run.name} ({flow_run.id})" if flow_run.id else f"pid {os.getpid()}"


@task(name="keep-sources")
def keep_sources(project_dir: str, locations: list[str], reason: str | None) -> list[str]:
    """Add the run's new data to the data catalogue of the project (by design, one reviewable file per source),
    before the run's workspace is made, so this run and every later one train on it."""
    root = Path(project_dir)
    params = load_params(root / PARAMS_FILE)
    known = {source_location(s) for s in params.data.sources}
    written = add_to_catalogue(root / params.paths.catalogue, locations, params.drift.text_column,
                               params.drift.label_column or "label", run_name(), reason or "kept by a training run",
                               known)
    for file in written:
        get_run_logger().info("data catalogue: added %s", file.relative_to(root))
    return [str(file.relative_to(root)) for file in written]


def ingest_must_reread(params: Params, run_dir: Path) -> bool:
    """DVC watches paths.inputs only: a source elsewhere (S3, a hub, a local path outside it) can change unseen,
    so ingest rereads it; an unchanged source gives a byte-identical snapshot and DVC skips what follows."""
    inputs = Path(params.paths.inputs)
    sources = [*params.data.sources, *(entry.source for entry in read_catalogue(run_dir / params.paths.catalogue))]

    def watched(source: Source) -> bool:
        location = source_location(source)
        if source.kind == "demo":
            return True
        hub = source.kind == "hf" and source.name is not None  # a hub dataset: its name is no local path
        if hub or not location or "://" in location or Path(location).is_absolute():
            return False
        return inputs in Path(location).parents or Path(location) == inputs

    return not all(watched(source) for source in sources)


def run_stages(run_dir: Path, params: Params, push: bool) -> list[dict[str, Any]]:
    """Every DVC stage as its own task run in the run's workspace (DVC skips the up-to-date ones), then
    `dvc push` to the project's DVC remote."""
    reread = ingest_must_reread(params, run_dir)
    stages = [run_dvc_stage(stage, str(run_dir), force=reread and stage == "ingest") for stage in STAGES]
    if push:
        push_outputs(str(run_dir))
    return stages


def register_and_gate(root: Path, run_dir: Path, reason: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Register the model with its lineage (idempotent), then move aliases only if the gate passed."""
    registered = register_model(str(root), reason, str(run_dir))
    return registered, move_aliases(str(root), registered["version"], str(run_dir))


def announce_candidate(root: Path, params: Params, aliases: dict[str, Any]) -> bool:
    """A gated candidate that is not the champion: the event the release deployment's trigger waits for."""
    state = aliases["aliases"]
    if not aliases["moved"] or state["candidate"] in (None, state["champion"]):
        return False
    location = project_registry(root, params).store.location
    emit_event(event=MODEL_CANDIDATE, resource={"prefect.resource.id": f"gradus.model.{state['candidate']}",
                                                "gradus.registry": location},
               payload={"version": state["candidate"], "champion": state["champion"], "registry": location})
    get_run_logger().info("candidate %s announced (%s): the release deployment starts on it", state["candidate"],
                          MODEL_CANDIDATE)
    return True


def publish(workspace: Workspace, params: Params, stages: list[dict[str, Any]], registered: dict[str, Any],
            aliases: dict[str, Any], kept: list[str]) -> dict[str, Any]:
    """Prefect artifacts (gate verdict, metrics, validation) and the run's result."""
    root, changes = workspace.path, workspace.changes
    gate = read_json(root / params.paths.gate_report)
    create_markdown_artifact(
        key="gate-report", description="Promotion gate verdict: every check, its numbers and reasons",
        markdown=(root / params.paths.gate_markdown).read_text(encoding="utf-8")
        + f"\nRegistered as **{registered['version']}** in `{gate['registry']['uri']}`; aliases now: "
        + ", ".join(f"{k}={v}" for k, v in aliases["aliases"].items() if v) + ".\n")
    metrics = read_json(root / params.paths.metrics)
    validation = read_json(root / params.paths.validation_report)
    docs = (root / params.paths.data_docs / "index.html").as_uri()
    report = root / params.paths.compression_report
    compression = read_json(report).get("variants", {}) if report.is_file() else {}
    task = params.model.task
    markdown = (metrics_markdown(metrics, stages, changes, task) + compression_markdown(compression, task)
                + validation_markdown(validation, docs))
    create_markdown_artifact(key="training-metrics", markdown=markdown,
                             description="Test metrics of the trained model, stage by stage, and data validation")
    # The run's own outputs (the inputs, catalogue, search and drift folders are not the pipeline's outputs).
    outputs = {name: str(root / value) for name, value in params.paths.model_dump().items()
               if name not in ("inputs", "catalogue", "tune", "drift_reports")}
    data = {k: validation[k] for k in ("rows_in", "rows_kept", "rows_quarantined")}
    verdict = {"passed": gate["passed"], "mode": gate["mode"], "champion": gate["champion"],
               "reasons": gate["reasons"]}
    where = {"path": str(workspace.path), "slot": workspace.slot, "reused": workspace.reused,
             "same_params": workspace.same_params}
    return {"task": task, "metrics": metrics, "data": data, "stages": stages, "param_changes": changes,
            "outputs": outputs,
            "gate": verdict, "registry": {**registered, **aliases}, "compression": compression,
            "workspace": where, "catalogue_added": kept,
            "training": read_json(summary) if (summary := root / params.paths.model / TRAINING_SUMMARY).is_file()
            else {}}


@flow(name="training_pipeline", log_prints=True)
def training_pipeline(overrides: TrainingOverrides | None = None, project_dir: str = ".",
                      push: bool = True) -> dict[str, Any]:
    """ingest → validate → split → train → evaluate → compress → gate through DVC, push outputs to the DVC remote,
    register the model with its lineage, and move the aliases only if the gate passed."""
    root = Path(project_dir).resolve()
    overrides = overrides or TrainingOverrides()
    logger = get_run_logger()
    if overrides.reason:
        logger.info("run started because: %s", overrides.reason)
    kept = keep_sources(str(root), overrides.add_sources, overrides.reason) if overrides.keep_sources else []
    # The run's own copy of the project: its overrides never reach params.yaml, another run or the user's tree.
    run_only = [] if overrides.keep_sources else overrides.add_sources
    with run_workspace(root, run_name(), overrides.dotted(), run_only, logger.info) as workspace:
        params = workspace.params
        if workspace.changes:
            logger.info("overrides for this run (its workspace's params.yaml only): %s", workspace.changes)
        stages = run_stages(workspace.path, params, push)
        registered, aliases = register_and_gate(root, workspace.path, overrides.reason)
        announce_candidate(root, params, aliases)
        return publish(workspace, params, stages, registered, aliases, kept)
