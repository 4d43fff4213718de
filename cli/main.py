"""The `gradus` command: run the pipeline, one stage, the registry, deployments and the drift monitor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cli import models
from cli.common import DEFAULT_PARAMS, ParamsOption, SetOption, fail, guarded, table
from gradus.config.loading import parse_override
from gradus.config.params import load_params
from gradus.errors import ConfigError, GradusError, IntegrityError
from gradus.stages import STAGES

app = typer.Typer(
    help="gradus: fine-tune a pretrained language model on validated, versioned data, step by step.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
params_app = typer.Typer(help="Inspect and check params.yaml.", no_args_is_help=True)
app.add_typer(params_app, name="params")
app.add_typer(models.app, name="models")


@app.command()
def run(
    set_: SetOption = None,
    project_dir: Annotated[Path, typer.Option(help="Project root holding dvc.yaml and params.yaml.")] = Path("."),
    push: Annotated[bool, typer.Option(help="Push outputs to the DVC remote after the run.")] = True,
    add_source: Annotated[list[str] | None, typer.Option(
        "--add-source", help="A labeled file, glob or s3:// prefix this run also trains on (repeatable).")] = None,
    keep: Annotated[bool, typer.Option(
        help="Keep the --add-source data in the data catalogue (paths.catalogue) for later runs too.")] = False,
) -> None:
    """Run the whole training pipeline as a Prefect flow on a local, ephemeral Prefect (no server needed).

    The run works in a workspace of its own (.gradus/runs/ws-N): --set overrides and --add-source data are
    written into that copy's params.yaml only, so DVC records them in the run's dvc.lock and the registered
    version's lineage, and the project's params.yaml never changes.
    """
    from flows.training import TrainingOverrides, training_pipeline
    from gradus.reports import format_result

    def action() -> None:
        overrides = TrainingOverrides(extra=set_ or [], add_sources=add_source or [], keep_sources=keep)
        typer.echo(format_result(training_pipeline(overrides, str(project_dir), push)))

    guarded(action)


@app.command()
def tune(
    trials: Annotated[int | None, typer.Option(min=1, help="Trials this run (default: tune.trials).")] = None,
    timeout_minutes: Annotated[float | None, typer.Option(
        help="No trial starts after this many minutes (default: tune.timeout_minutes).")] = None,
    study: Annotated[str | None, typer.Option(help="Study name; the same name continues that search.")] = None,
    set_: SetOption = None,
    project_dir: Annotated[Path, typer.Option(help="Project root holding dvc.yaml and params.yaml.")] = Path("."),
) -> None:
    """Search train params with Optuna; every trial is a DVC experiment (`dvc exp show` lists them). The best
    is written as a proposal (reports/tune/STUDY.json); params.yaml is not changed."""
    from flows.tune import proposal_markdown
    from flows.tune import tune as tune_flow

    guarded(lambda: typer.echo(proposal_markdown(tune_flow(trials, timeout_minutes, study, set_ or [],
                                                           str(project_dir)))))


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help="One of: " + ", ".join(STAGES) + ".")],
    set_: SetOption = None,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Run one stage directly, without DVC's caching (dvc.yaml runs `python -m tasks STAGE`: the same runner)."""
    from tasks.runner import run_stage

    guarded(lambda: typer.echo(json.dumps(run_stage(name, params, set_ or []), indent=2, sort_keys=True,
                                          default=str)))


@params_app.command("check")
def params_check(set_: SetOption = None, params: ParamsOption = DEFAULT_PARAMS) -> None:
    """Validate params.yaml (and overrides); exit 2 naming each bad key."""
    try:
        load_params(params, set_ or [])
    except ConfigError as exc:
        raise fail(exc) from None
    typer.echo(f"{params}: ok")


@params_app.command("show")
def params_show(set_: SetOption = None, params: ParamsOption = DEFAULT_PARAMS) -> None:
    """Print the effective parameters (defaults filled in, overrides applied) as JSON."""
    try:
        typer.echo(json.dumps(load_params(params, set_ or []).as_dict(), indent=2))
    except ConfigError as exc:
        raise fail(exc) from None


@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Argument(help="Where to write the CSV (text,label).")],
    rows: Annotated[int, typer.Option(min=100)] = 3000,
    seed: int = 7,
) -> None:
    """Write the embedded demo dataset to a CSV file (the same rows the demo source generates)."""
    from gradus.demo import generate

    out.parent.mkdir(parents=True, exist_ok=True)
    generate(rows, seed).to_csv(out, index=False)
    typer.echo(f"wrote {rows} rows to {out}")


@app.command()
def deploy(
    project_dir: Annotated[Path, typer.Option(help="Project root the deployments run in.")] = Path("."),
    pool_type: Annotated[str, typer.Option(
        help="process (runs on this machine) or kubernetes (jobs run --image; training asks for a GPU).")] = "process",
    work_pool: Annotated[str | None, typer.Option(
        help="Work pool name, created if missing (default: gradus-local, gradus-kubernetes).")] = None,
    image: Annotated[str | None, typer.Option(help="The gradus worker image (kubernetes pools).")] = None,
    incoming: Annotated[str | None, typer.Option(
        help="Where the drift monitor looks for new text (default: the service's prediction log).")] = None,
    notify_url: Annotated[str | None, typer.Option(
        help="Webhook for notifications of failed runs, drift retrains, rollbacks (or GRADUS_NOTIFY_WEBHOOK).")]
        = None,
) -> None:
    """Register the Prefect deployments training-pipeline (weekly + on demand), drift-monitor (hourly) and
    release (on a gated candidate) on a process or Kubernetes work pool."""
    from infra.deploy import deploy_all

    def action() -> None:
        deployed = deploy_all(project_dir, work_pool, incoming, notify_url, pool_type, image)
        for name, deployment in deployed.items():
            typer.echo(f"deployed {name}: {deployment}")

    guarded(action)


@app.command()
def drift(
    current: Annotated[str, typer.Argument(help="New text: a CSV/JSONL/Parquet file, glob or s3:// prefix.")],
    project_dir: Annotated[Path, typer.Option(help="Project root holding params.yaml.")] = Path("."),
    trigger: Annotated[bool, typer.Option(help="Start the training deployment when drift warrants it.")] = False,
) -> None:
    """Run the drift monitor once (on a local, ephemeral Prefect); prints each signal and the decision."""
    from flows.drift import drift_monitor

    try:
        summary = drift_monitor(current, str(project_dir), trigger)
    except GradusError as exc:
        raise fail(exc) from None
    rows = [[name, f"{s['score']:.4f}", s["method"], f"{s['threshold']:g}", "yes" if s["drifted"] else "no"]
            for name, s in summary["signals"].items()]
    typer.echo(table(["SIGNAL", "SCORE", "METHOD", "THRESHOLD", "DRIFTED"], rows))
    decision = summary["decision"]
    typer.echo(f"\ndecision: {'retrain' if decision['retrain'] else 'no retrain'} — " + "; ".join(decision["reasons"]))
    typer.echo("reports: " + ", ".join(summary["reports"]))


@app.command()
def lifecycle(
    project_dir: Annotated[Path, typer.Option(help="Project root holding params.yaml.")] = Path("."),
    rate: Annotated[float, typer.Option(help="Replayed requests per second.")] = 25.0,
) -> None:
    """The rest of the demo after the first champion (`make demo` runs it): serve it, replay demo traffic with
    feedback, retrain on the feedback, release the new candidate step by step, report drift on served traffic."""
    from cli.lifecycle import run_lifecycle

    guarded(lambda: run_lifecycle(project_dir.resolve(), rate, typer.echo))


@app.command()
def release(
    version: Annotated[str, typer.Argument(help="The version id or alias to release.")] = "candidate",
    set_: SetOption = None,
    project_dir: Annotated[Path, typer.Option(help="Project root holding params.yaml.")] = Path("."),
) -> None:
    """Release a gated version gradually: shadow → canary steps → approval → champion, judged on the running
    service's traffic (release: in params.yaml; --set release.min_dwell_s=30 for one run). Runs the `release`
    flow here (on PREFECT_API_URL's server when set: its UI shows the approval form); exit 1 when rolled back."""
    from pydantic import ValidationError

    from flows.release import ReleaseOverrides
    from flows.release import release as release_flow
    from gradus.release.controller import RolledBack

    def action() -> None:
        chosen = {}
        for text in set_ or []:
            keys, value = parse_override(text)
            if len(keys) != 2 or keys[0] != "release":
                raise ConfigError(f"--set {text}: only release.* keys apply to a release")
            chosen[keys[1]] = value
        try:
            overrides = ReleaseOverrides.model_validate(chosen)
        except ValidationError as exc:
            raise ConfigError("; ".join(f"release.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                        for e in exc.errors())) from None
        try:
            result = release_flow(version, overrides, str(project_dir.resolve()))
        except RolledBack as exc:
            raise fail(exc, code=1) from None
        typer.echo(json.dumps(result, indent=2, default=str))

    guarded(action)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default: serving.host, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: serving.port, 8000).")] = None,
    params: ParamsOption = DEFAULT_PARAMS,
    set_: SetOption = None,
) -> None:
    """Serve the registry's champion (and canary) over HTTP: /v1/predict, /v2 (Open Inference Protocol),
    /metrics, /docs. Follows the registry's aliases (hot swap); Ctrl-C or SIGTERM shuts down gracefully."""
    from serving.server import run_service

    guarded(lambda: run_service(params, host, port, set_ or []))


EndpointOption = Annotated[str | None, typer.Option(
    "--endpoint-url", help="S3-compatible server of an s3:// location (default: AWS_ENDPOINT_URL, else AWS).")]


@app.command()
def backup(
    dest: Annotated[str, typer.Argument(help="A folder or s3://bucket/prefix to back up into.")],
    endpoint_url: EndpointOption = None, params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Copy the registry (versions, aliases, audit log) and the DVC remote to DEST with a manifest of sha256
    hashes; a later backup to the same DEST copies only what changed since."""
    def action() -> None:
        from gradus.backup import backup as run_backup
        from gradus.backup import project_stores

        result = run_backup(project_stores(params.resolve().parent, load_params(params)), dest, endpoint_url,
                            typer.echo)
        typer.echo(f"backup {result['location']} ({result['created_at']})")
        for section, item in result["sections"].items():
            typer.echo(f"  {section:<11} {item['objects']} objects ({item['bytes']:,} bytes): {item['copied']} "
                       f"copied, {item['unchanged']} unchanged since the last backup")

    guarded(action)


@app.command()
def restore(
    src: Annotated[str, typer.Argument(help="A backup location written by `gradus backup`.")],
    endpoint_url: EndpointOption = None, params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Bring the registry and the DVC remote back from a backup, every object checked against the backup's
    sha256 before it is written; then verify the registry as `gradus models verify` does."""
    def action() -> None:
        from gradus.backup import project_stores
        from gradus.backup import restore as run_restore
        from gradus.registry.versions import project_registry

        root, loaded = params.resolve().parent, load_params(params)
        result = run_restore(src, project_stores(root, loaded), endpoint_url)
        typer.echo(f"restored from {result['location']} (backup of {result['backup_created_at']})")
        for section, item in result["sections"].items():
            typer.echo(f"  {section:<11} {item['objects']} objects: {item['restored']} restored, "
                       f"{item['already_there']} already there")
        for section, item in result["not_restored"].items():
            typer.echo(f"  {section:<11} {item['objects']} objects NOT restored: no DVC remote configured here "
                       "(`dvc remote add -d NAME URL`, then restore again)")
        problems = project_registry(root, loaded).verify()
        if problems:
            raise IntegrityError("restored, but the registry does not verify: " + "; ".join(map(str, problems)))
        typer.echo("registry verified: every version, record and alias checks out")

    guarded(action)


@app.command()
def status(
    url: Annotated[str | None, typer.Option(
        help="The service to ask (default: http://serving.host:serving.port); --url '' to skip it.")] = None,
    window: Annotated[float, typer.Option(help="Seconds between the two /metrics scrapes for live rates.")] = 2.0,
    params: ParamsOption = DEFAULT_PARAMS,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """One screen: served versions and weights, release, last training and gate verdict, last drift verdict,
    and the live service's req/s, error rate and p99."""
    from cli.status import collect, render
    from gradus.catalogue import read_catalogue
    from gradus.registry.versions import project_registry

    def action() -> None:
        loaded = load_params(params)
        target = loaded.serving.url() if url is None else url or None
        root = params.resolve().parent
        kept = [e.summary() for e in read_catalogue(root / loaded.paths.catalogue)]
        report = collect(project_registry(root, loaded), target, window, kept)
        typer.echo(json.dumps(report, indent=2, default=str) if as_json else render(report))

    guarded(action)


@app.command()
def replay(
    source: Annotated[str, typer.Argument(help="Labeled texts: a CSV/JSONL/Parquet file, glob or s3:// prefix.")],
    rate: Annotated[float, typer.Option(min=0.1, help="Requests per second (one text each).")] = 10.0,
    duration: Annotated[float, typer.Option(min=0.1, help="Seconds to send for (texts repeat if needed).")] = 30.0,
    feedback_delay: Annotated[float, typer.Option(min=0.0, help="Seconds before each label is posted.")] = 5.0,
    users: Annotated[int, typer.Option(min=1, help="Distinct routing keys (sticky canary routing).")] = 100,
    text_column: str = "text",
    label_column: Annotated[str | None, typer.Option(help="Label column; absent: no feedback is sent.")] = "label",
    url: Annotated[str | None, typer.Option(help="The service (default: http://serving.host:serving.port).")] = None,
    params: ParamsOption = DEFAULT_PARAMS,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Replay a labeled file against a running service at a fixed rate, posting the labels as late feedback:
    traffic for releases, drift and dashboards on one machine."""
    import asyncio

    from cli.replay import load_rows, summary_lines
    from cli.replay import replay as run_replay

    def action() -> None:
        loaded = load_params(params)
        target = url or loaded.serving.url()
        texts, labels = load_rows(source, text_column, label_column)
        if not texts:
            raise GradusError(f"{source}: no texts in column {text_column!r}")
        report = asyncio.run(run_replay(target, texts, labels, rate=rate, duration=duration,
                                        feedback_delay=feedback_delay, users=users))
        typer.echo(json.dumps(report, indent=2) if as_json else summary_lines(report))

    guarded(action)


@app.command()
def version() -> None:
    """Print the gradus version."""
    from gradus import __version__

    typer.echo(__version__)


if __name__ == "__main__":  # pragma: no cover
    app()
