"""The `gradus` command: run the pipeline, one stage, or inspect parameters and demo data."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from gradus.config import PARAMS_FILE, ConfigError, load_params
from gradus.errors import GradusError

app = typer.Typer(
    help="gradus: fine-tune a pretrained language model on validated, versioned data, step by step.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
params_app = typer.Typer(help="Inspect and check params.yaml.", no_args_is_help=True)
app.add_typer(params_app, name="params")
models_app = typer.Typer(
    help="The model registry: versions with lineage, aliases, integrity. Exit codes: 0 ok, 2 bad request "
         "(unknown version, bad params), 3 conflict (aliases changed concurrently: re-read and retry), "
         "4 integrity failure (a file changed, missing or unsafe).",
    no_args_is_help=True)
app.add_typer(models_app, name="models")

SetOption = Annotated[list[str] | None, typer.Option(
    "--set", "-S", help="Override a parameter for this run, e.g. --set train.epochs=1 (repeatable).")]
ParamsOption = Annotated[Path, typer.Option("--params", help="The params file.")]
STAGE_NAMES = ("ingest", "validate", "split", "train", "evaluate", "gate")


def _fail(exc: Exception) -> typer.Exit:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


@app.command()
def run(
    set_: SetOption = None,
    project_dir: Annotated[Path, typer.Option(help="Project root holding dvc.yaml and params.yaml.")] = Path("."),
    push: Annotated[bool, typer.Option(help="Push outputs to the DVC remote after the run.")] = True,
) -> None:
    """Run the whole training pipeline as a Prefect flow on a local, ephemeral Prefect (no server needed).

    Overrides are written into params.yaml first (as `dvc exp run -S` does) so DVC tracks them.
    """
    # The CLI is the one place in gradus/ that reaches the orchestration layer, and only lazily here:
    # importing gradus never imports Prefect.
    flows_training = importlib.import_module("flows.training")
    try:
        result = flows_training.training_pipeline(
            flows_training.TrainingOverrides(extra=set_ or []), str(project_dir), push)
    except (ConfigError, GradusError) as exc:
        raise _fail(exc) from None
    typer.echo(flows_training.format_result(result))


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(STAGE_NAMES)}.")],
    set_: SetOption = None,
    params: ParamsOption = Path(PARAMS_FILE),
) -> None:
    """Run one stage directly, without DVC's caching (dvc.yaml runs `python -m tasks STAGE`)."""
    if name not in STAGE_NAMES:
        raise _fail(ValueError(f"unknown stage {name!r}; choose one of {', '.join(STAGE_NAMES)}"))
    try:
        summary = importlib.import_module(f"tasks.{name}").run(load_params(params, set_ or []))
    except (ConfigError, GradusError) as exc:
        raise _fail(exc) from None
    typer.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))


@params_app.command("check")
def params_check(set_: SetOption = None, params: ParamsOption = Path(PARAMS_FILE)) -> None:
    """Validate params.yaml (and overrides); exit 2 naming each bad key."""
    try:
        load_params(params, set_ or [])
    except ConfigError as exc:
        raise _fail(exc) from None
    typer.echo(f"{params}: ok")


@params_app.command("show")
def params_show(set_: SetOption = None, params: ParamsOption = Path(PARAMS_FILE)) -> None:
    """Print the effective parameters (defaults filled in, overrides applied) as JSON."""
    try:
        typer.echo(json.dumps(load_params(params, set_ or []).as_dict(), indent=2))
    except ConfigError as exc:
        raise _fail(exc) from None


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


# ------------------------------------------------------------------------------------- models ...

EXIT_CONFLICT, EXIT_INTEGRITY = 3, 4
RegistryOption = Annotated[str | None, typer.Option(
    "--registry", help="Registry location (folder or s3://bucket/prefix); default: params.yaml registry.uri.")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")]
ExpectOption = Annotated[int | None, typer.Option(
    "--expect-generation", help="Only change the aliases if they are still at this generation (see `list`).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _registry(uri: str | None, params: Path) -> Any:
    from gradus.registry import open_registry, project_registry

    if uri:
        return open_registry(uri, cache=Path(".gradus/models"), base=Path.cwd())
    return project_registry(params.resolve().parent, load_params(params))


def _registry_call(action: Callable[[], None]) -> None:
    """Run a registry command, mapping its errors to one line and a distinct exit code."""
    from gradus.errors import ConflictError, IntegrityError

    try:
        action()
    except ConflictError as exc:
        typer.secho(f"conflict: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_CONFLICT) from None
    except IntegrityError as exc:
        typer.secho(f"integrity: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_INTEGRITY) from None
    except (ConfigError, GradusError) as exc:
        raise _fail(exc) from None


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-" if value is None else str(value)


def _alias_line(state: Any) -> str:
    names = [f"{k}={v}" for k, v in state.mapping().items() if v and k != "canary"]
    if state.canary:
        names.append(f"canary={state.canary['version']}@{state.canary['weight']:g}")
    return f"aliases (generation {state.generation}): " + (", ".join(names) or "none set")


def _cli_run() -> str:
    from gradus.registry import actor

    return f"cli:{actor()}"


@models_app.command("list")
def models_list(registry: RegistryOption = None, params: ParamsOption = Path(PARAMS_FILE),
                as_json: JsonOption = False) -> None:
    """Every registered version, oldest first, with its scores, gate verdict and aliases."""
    def action() -> None:
        store = _registry(registry, params)
        state, versions = store.aliases(), store.versions()
        if as_json:
            typer.echo(json.dumps({"aliases": {**state.mapping(), "generation": state.generation},
                                   "versions": [{k: m.get(k) for k in ("version", "created_at", "run", "metrics")}
                                                | {"gate_passed": (m.get("gate") or {}).get("passed"),
                                                   "aliases": state.names_for(m["version"])} for m in versions]},
                                  indent=2))
            return
        rows = [[m["version"], m["created_at"][:19].replace("T", " "), _fmt(m["metrics"].get("accuracy")),
                 _fmt(m["metrics"].get("macro_f1")),
                 {True: "pass", False: "FAIL", None: "-"}[(m.get("gate") or {}).get("passed")],
                 ",".join(state.names_for(m["version"])), (m["lineage"]["code"].get("commit") or "-")[:10]]
                for m in versions]
        typer.echo(_table(["VERSION", "CREATED (UTC)", "ACCURACY", "MACRO-F1", "GATE", "ALIASES", "COMMIT"], rows))
        typer.echo(f"\n{len(versions)} version(s) in {store.store.location}; {_alias_line(state)}")

    _registry_call(action)


@models_app.command("show")
def models_show(version: Annotated[str, typer.Argument(help="Version id, unique prefix or alias name.")],
                registry: RegistryOption = None, params: ParamsOption = Path(PARAMS_FILE),
                as_json: JsonOption = False) -> None:
    """One version: lineage (datasets, dvc.lock, commit, base model, params), metrics, gate report, files."""
    def action() -> None:
        store = _registry(registry, params)
        manifest = store.require(version)
        if as_json:
            typer.echo(json.dumps(manifest, indent=2, sort_keys=True))
            return
        typer.echo(describe_version(manifest, store.aliases().names_for(manifest["version"])))

    _registry_call(action)


def describe_version(m: dict[str, Any], aliases: list[str]) -> str:
    """A version's manifest as a page a person reads."""
    lineage, gate = m["lineage"], m.get("gate") or {}
    code, base = lineage["code"], lineage["base_model"]
    lines = [f"version     {m['version']}   aliases: {', '.join(aliases) or 'none'}",
             f"created     {m['created_at']} by run {m['run']}",
             f"base model  {base['name']} @ {base['revision']}",
             f"code        commit {code.get('commit')} ({code.get('branch')})"
             + (f", modified: {', '.join(code['modified'])}" if code.get("modified") else ""),
             "datasets    " + ", ".join(f"{k} md5 {v}" for k, v in lineage["datasets"].items()),
             "metrics     " + ", ".join(f"{k} {_fmt(m['metrics'].get(k))}" for k in
                                        ("accuracy", "macro_f1", "weighted_f1", "ece", "test_rows")),
             f"gate        {'passed' if gate.get('passed') else 'FAILED'} ({gate.get('mode')}"
             + (f" vs {gate['champion']}" if gate.get("champion") else "") + ")"]
    lines += [f"              - {reason}" for reason in gate.get("reasons", [])]
    lines += ["", "dvc.lock (md5 of every stage output):"]
    for stage, entry in lineage["dvc_lock"].items():
        lines += [f"  {stage:<9} {path}  {md5}" for path, md5 in entry["outs"].items()]
    lines += ["", _table(["FILE", "SIZE", "SHA256"], [[name, info["size"], info["sha256"]]
                                                       for name, info in m["files"].items()])]
    return "\n".join(lines)


@models_app.command("promote")
def models_promote(version: Annotated[str, typer.Argument(help="Version id, unique prefix or alias name.")],
                   reason: ReasonOption = "promoted by hand", expect_generation: ExpectOption = None,
                   force: Annotated[bool, typer.Option(help="Promote even though its gate failed.")] = False,
                   registry: RegistryOption = None, params: ParamsOption = Path(PARAMS_FILE)) -> None:
    """Make a version the champion (the old champion becomes `previous`)."""
    def action() -> None:
        store = _registry(registry, params)
        manifest = store.require(version)
        if not (manifest.get("gate") or {}).get("passed") and not force:
            raise GradusError(f"{manifest['version']} did not pass the gate ("
                              + "; ".join((manifest.get("gate") or {}).get("reasons", ["no gate report"]))
                              + "); use --force --reason '...' to promote it anyway")
        before = store.aliases()
        after = store.promote(manifest["version"], run=_cli_run(), reason=reason,
                              expected_generation=expect_generation)
        typer.echo(f"champion: {before.champion or 'none'} -> {after.champion} (generation {after.generation})")

    _registry_call(action)


@models_app.command("rollback")
def models_rollback(reason: ReasonOption = "rolled back by hand", expect_generation: ExpectOption = None,
                    registry: RegistryOption = None, params: ParamsOption = Path(PARAMS_FILE)) -> None:
    """Make the previous champion the champion again."""
    def action() -> None:
        store = _registry(registry, params)
        before = store.aliases()
        after = store.rollback(run=_cli_run(), reason=reason, expected_generation=expect_generation)
        typer.echo(f"champion: {before.champion} -> {after.champion} (generation {after.generation})")

    _registry_call(action)


@models_app.command("canary")
def models_canary(version: Annotated[str | None, typer.Argument(help="Version to send traffic to.")] = None,
                  weight: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of traffic.")] = 0.1,
                  clear: Annotated[bool, typer.Option(help="Remove the canary.")] = False,
                  reason: ReasonOption = "canary set by hand", expect_generation: ExpectOption = None,
                  registry: RegistryOption = None, params: ParamsOption = Path(PARAMS_FILE)) -> None:
    """Set (or clear) the canary version and its traffic weight, for a gradual release."""
    def action() -> None:
        if version is None and not clear:
            raise GradusError("give a VERSION, or --clear")
        store = _registry(registry, params)
        after = store.set_canary(None if clear else version, weight, run=_cli_run(), reason=reason,
                                 expected_generation=expect_generation)
        typer.echo(_alias_line(after))

    _registry_call(action)


@models_app.command("diff")
def models_diff(first: Annotated[str, typer.Argument(help="Version (or alias).")],
                second: Annotated[str, typer.Argument(help="Version (or alias).")],
                registry: RegistryOption = None, params: ParamsOption = Path(PARAMS_FILE)) -> None:
    """What differs between two versions: metrics, params, datasets, code, base model, files."""
    def action() -> None:
        store = _registry(registry, params)
        a, b = store.require(first), store.require(second)
        typer.echo(diff_versions(a, b))

    _registry_call(action)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out |= _flatten(item, f"{prefix}{key}.")
        return out
    return {prefix.rstrip("."): value}


def _number(value: Any) -> bool:
    return isinstance(value, float | int) and not isinstance(value, bool)


def diff_versions(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Side-by-side differences of two manifests."""
    sections = []
    metrics_a, metrics_b = _flatten(a["metrics"]), _flatten(b["metrics"])
    rows = [[k, _fmt(metrics_a.get(k)), _fmt(metrics_b.get(k)),
             f"{metrics_b[k] - metrics_a[k]:+.4f}" if _number(metrics_a.get(k)) and _number(metrics_b.get(k)) else ""]
            for k in sorted(set(metrics_a) | set(metrics_b)) if metrics_a.get(k) != metrics_b.get(k)]
    sections.append(_table(["METRIC", a["version"], b["version"], "CHANGE"], rows) if rows else "metrics: identical")
    for title, key in (("PARAM", "params"), ("DATASET", "datasets"), ("BASE MODEL", "base_model"), ("CODE", "code")):
        left, right = _flatten(a["lineage"][key]), _flatten(b["lineage"][key])
        rows = [[k, _fmt(left.get(k)), _fmt(right.get(k))] for k in sorted(set(left) | set(right))
                if left.get(k) != right.get(k)]
        sections.append(_table([title, a["version"], b["version"]], rows) if rows else f"{key}: identical")
    changed = sorted(n for n in set(a["files"]) | set(b["files"]) if a["files"].get(n) != b["files"].get(n))
    sections.append("files changed: " + (", ".join(changed) or "none"))
    return "\n\n".join(sections)


@models_app.command("verify")
def models_verify(version: Annotated[str | None, typer.Argument(help="One version; default: all.")] = None,
                  registry: RegistryOption = None, params: ParamsOption = Path(PARAMS_FILE)) -> None:
    """Re-hash every stored file against its manifest; exit 4 naming each file that does not match."""
    def action() -> None:
        from gradus.errors import IntegrityError

        store = _registry(registry, params)
        manifests = [store.require(version)] if version else store.versions()
        problems = store.verify(version)
        for manifest in manifests:
            own = [p for p in problems if p.version == manifest["version"]]
            typer.echo(f"{'ok' if not own else 'FAILED':<7} {manifest['version']} ({len(manifest['files'])} files)")
        if problems:
            raise IntegrityError(f"{len(problems)} problem(s): " + "; ".join(map(str, problems)))

    _registry_call(action)


@models_app.command("log")
def models_log(registry: RegistryOption = None, params: ParamsOption = Path(PARAMS_FILE),
               as_json: JsonOption = False) -> None:
    """The audit log: every registration, alias change and refused change, oldest first."""
    def action() -> None:
        events = _registry(registry, params).audit_log()
        if as_json:
            typer.echo(json.dumps(events, indent=2, sort_keys=True))
            return
        typer.echo(_table(["AT (UTC)", "ACTION", "OUTCOME", "VERSION", "RUN", "BY", "REASON"],
                          [[e["at"][:23].replace("T", " "), e["action"], e["outcome"], e.get("version"), e["run"],
                            e["by"], e["reason"][:80]] for e in events]))

    _registry_call(action)


@app.command()
def deploy(
    project_dir: Annotated[Path, typer.Option(help="Project root the deployments run in.")] = Path("."),
    work_pool: Annotated[str, typer.Option(help="Prefect process work pool (created if missing).")] = "gradus-local",
    incoming: Annotated[str, typer.Option(help="Where the drift monitor looks for new batches.")] =
        "data/incoming/*.jsonl",
) -> None:
    """Register the Prefect deployments training-pipeline (weekly + on demand) and drift-monitor (hourly)."""
    # Like `run`, reaches the orchestration layer only here, lazily.
    for name, deployment in importlib.import_module("infra.deploy").deploy_all(
            project_dir, work_pool, incoming).items():
        typer.echo(f"deployed {name}: {deployment}")


@app.command()
def drift(
    current: Annotated[str, typer.Argument(help="New text: a CSV/JSONL/Parquet file, glob or s3:// prefix.")],
    project_dir: Annotated[Path, typer.Option(help="Project root holding params.yaml.")] = Path("."),
    trigger: Annotated[bool, typer.Option(help="Start the training deployment when drift warrants it.")] = False,
) -> None:
    """Run the drift monitor once (on a local, ephemeral Prefect); prints each signal and the decision."""
    flows_drift = importlib.import_module("flows.drift")
    try:
        summary = flows_drift.drift_monitor(current, str(project_dir), trigger)
    except (ConfigError, GradusError) as exc:
        raise _fail(exc) from None
    rows = [[name, f"{s['score']:.4f}", s["method"], f"{s['threshold']:g}", "yes" if s["drifted"] else "no"]
            for name, s in summary["signals"].items()]
    typer.echo(_table(["SIGNAL", "SCORE", "METHOD", "THRESHOLD", "DRIFTED"], rows))
    decision = summary["decision"]
    typer.echo(f"\ndecision: {'retrain' if decision['retrain'] else 'no retrain'} — " + "; ".join(decision["reasons"]))
    typer.echo("reports: " + ", ".join(summary["reports"]))


@app.command()
def version() -> None:
    """Print the gradus version."""
    from gradus import __version__

    typer.echo(__version__)


if __name__ == "__main__":  # pragma: no cover
    app()
