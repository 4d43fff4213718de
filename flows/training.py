"""The training pipeline as a Prefect flow: each DVC stage is one task run, overrides are typed parameters."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from pydantic import BaseModel, ConfigDict, Field

from flows.tasks import move_aliases, push_outputs, register_model, run_dvc_stage
from gradus.catalogue import add_to_catalogue, read_catalogue, source_location
from gradus.config.params import Params, load_params, optional_override
from gradus.config.pipeline import PARAMS_FILE, Source, TrainConfig
from gradus.events import MODEL_CANDIDATE
from gradus.io import read_json
from gradus.registry.versions import project_registry
from gradus.workspace import Workspace, run_workspace
from tasks.runner import STAGES

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


def metrics_markdown(metrics: dict[str, Any], stages: list[dict[str, Any]], changes: dict[str, Any]) -> str:
    """The run's metrics, stage outcomes and parameter changes as a markdown artifact."""
    baseline = metrics.get("baseline_tfidf", {})
    lines = ["# Training pipeline", "", "| metric | model | TF-IDF baseline |", "|---|---|---|"]
    for key in ("accuracy", "macro_f1"):
        lines.append(f"| {key} | {metrics.get(key, float('nan')):.4f} | {baseline.get(key, float('nan')):.4f} |")
    lines += ["", f"Test rows: {metrics.get('test_rows')}", "", "| stage | ran | seconds |", "|---|---|---|"]
    lines += [f"| {s['stage']} | {'yes' if s['ran'] else 'up to date'} | {s['seconds']} |" for s in stages]
    if changes:
        lines += ["", "| parameter | was | now |", "|---|---|---|"]
        lines += [f"| {key} | {c['old']} | {c['new']} |" for key, c in changes.items()]
    return "\n".join(lines)


def validation_markdown(report: dict[str, Any], docs_uri: str) -> str:
    """The validation summary, with a link to the Great Expectations Data Docs."""
    failed = ", ".join(f"{k}={v}" for k, v in report.get("failed_rows", {}).items() if v) or "none"
    flagged = ", ".join(f"{k}={v}" for k, v in report.get("flagged_rows", {}).items()) or "none"
    return "\n".join([
        "", "## Data validation", "",
        f"{report['rows_in']} rows in, {report['rows_kept']} kept, {report['rows_quarantined']} quarantined "
        f"(failed checks: {failed}); flagged but kept: {flagged}.", "",
        f"[Great Expectations Data Docs]({docs_uri})",
    ])


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
    markdown = (metrics_markdown(metrics, stages, changes) + compression_markdown(compression)
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
    return {"metrics": metrics, "data": data, "stages": stages, "param_changes": changes, "outputs": outputs,
            "gate": verdict, "registry": {**registered, **aliases}, "compression": compression,
            "workspace": where, "catalogue_added": kept}


def compression_markdown(variants: dict[str, Any]) -> str:
    """The compress stage's variants: parity, speed, and whether they were registered as servable."""
    if not variants:
        return ""
    lines = ["", "## Compressed variants", "", "| variant | servable | agreement | accuracy drop | speed vs torch |",
             "|---|---|---|---|---|"]
    lines += [f"| {name} | {'yes' if v['passed'] else '**no**: ' + '; '.join(v['reasons'])} | {v['agreement']:.4f} "
              f"| {v['accuracy_drop']:+.4f} | {v['speedup']:.2f}x |" for name, v in variants.items()]
    return "\n".join(lines) + "\n"


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


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.training [--set KEY=VALUE ...]`: run the flow on a local, ephemeral Prefect."""
    parser = argparse.ArgumentParser(prog="python -m flows.training")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--project-dir", default=".")
    parser.add_argument("--no-push", action="store_true", help="skip `dvc push` to the DVC remote")
    args = parser.parse_args(argv)
    result = training_pipeline(TrainingOverrides(extra=args.extra), args.project_dir, not args.no_push)
    print(format_result(result))
    return 0


def format_result(result: dict[str, Any]) -> str:
    """The closing summary a person reads: key metrics, then where every output is."""
    metrics, data = result["metrics"], result["data"]
    baseline = metrics.get("baseline_tfidf", {})
    lines = [
        "",
        "gradus training pipeline finished",
        f"  data           {data['rows_in']} rows in, {data['rows_kept']} kept, "
        f"{data['rows_quarantined']} quarantined with reasons (see quarantine below)",
        f"  test accuracy  {metrics['accuracy']:.4f}   (TF-IDF baseline {baseline.get('accuracy', 0):.4f}, "
        f"majority class {metrics.get('majority_class_accuracy', 0):.4f})",
        f"  test macro-F1  {metrics['macro_f1']:.4f}   (TF-IDF baseline {baseline.get('macro_f1', 0):.4f})",
        f"  stages run     {', '.join(s['stage'] for s in result['stages'] if s['ran']) or 'none (all up to date)'}"
        + (f"; reused: {', '.join(s['stage'] for s in result['stages'] if not s['ran'])}"
           if any(s["ran"] for s in result["stages"]) and not all(s["ran"] for s in result["stages"]) else ""),
        f"  workspace      {workspace_line(result['workspace'])}",
        f"  gate           {gate_line(result['gate'])}",
        f"  registry       version {result['registry']['version']}"
        f"{'' if result['registry']['created'] else ' (already registered)'}; "
        + (", ".join(f"{k}={v}" for k, v in result["registry"]["aliases"].items() if v) or "no aliases set"),
        *[f"                 - {reason}" for reason in result["gate"]["reasons"]],
        "  compressed     " + (", ".join(
            f"{name} {v['speedup']:.2f}x torch, agreement {v['agreement']:.4f}, "
            + ("servable" if v["passed"] else "NOT servable (parity)")
            for name, v in result.get("compression", {}).items()) or "no variants (compress.enabled: false)"),
        "  outputs:",
    ]
    lines += [f"    {name:<18} {path}" for name, path in result["outputs"].items()]
    return "\n".join(lines)


def workspace_line(workspace: dict[str, Any]) -> str:
    """Where the run worked, and whether it found an earlier run's outputs there."""
    how = ("reused (its last run had the same params)" if workspace["same_params"] else
           "reused (an earlier run's outputs, other params)" if workspace["reused"] else "new")
    return f"{workspace['path']} ({how}); params.yaml untouched"


def gate_line(gate: dict[str, Any]) -> str:
    """One line: the verdict and what it was judged against."""
    against = f"champion {gate['champion']}" if gate["champion"] else "absolute thresholds (first model)"
    if gate["passed"]:
        return f"PASSED against {against}"
    return f"FAILED against {against}; aliases unchanged. Reasons:"


if __name__ == "__main__":
    sys.exit(main())
