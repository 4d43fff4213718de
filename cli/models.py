"""`gradus models ...`: the model registry from the command line (versions, lineage, aliases, integrity)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import DEFAULT_PARAMS, JsonOption, ParamsOption, fmt, guarded, table
from gradus.config.params import load_params
from gradus.errors import GradusError, IntegrityError

app = typer.Typer(
    help="The model registry: versions with lineage, aliases, integrity. Exit codes: 0 ok, 2 bad request "
         "(unknown version, bad params), 3 conflict (aliases changed concurrently: re-read and retry), "
         "4 integrity failure (a file changed, missing or unsafe).",
    no_args_is_help=True)

RegistryOption = Annotated[str | None, typer.Option(
    "--registry", help="Registry location (folder or s3://bucket/prefix); default: params.yaml registry.uri.")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")]
ExpectOption = Annotated[int | None, typer.Option(
    "--expect-generation", help="Only change the aliases if they are still at this generation (see `list`).")]


def _registry(uri: str | None, params: Path) -> Any:
    from gradus.registry.versions import open_registry, project_registry

    if uri:
        if not uri.startswith("s3://") and not Path(uri).expanduser().is_dir():
            raise GradusError(f"--registry {uri}: no registry there (not a folder); check the path")
        return open_registry(uri, cache=Path(".gradus/models"), base=Path.cwd())
    return project_registry(params.resolve().parent, load_params(params))


def _alias_line(state: Any) -> str:
    names = [f"{k}={v}" for k, v in state.mapping().items() if v and k != "canary"]
    if state.canary:
        names.append(f"canary={state.canary['version']}@{state.canary['weight']:g}")
    return f"aliases (generation {state.generation}): " + (", ".join(names) or "none set")


def _cli_run() -> str:
    from gradus.registry.audit import actor

    return f"cli:{actor()}"


@app.command("list")
def models_list(registry: RegistryOption = None, params: ParamsOption = DEFAULT_PARAMS,
                as_json: JsonOption = False) -> None:
    """Every registered version, oldest first, with its scores, gate verdict and aliases."""
    def action() -> None:
        from gradus.task_types.base import METRIC_NAMES
        from gradus.task_types.seam import task_of, task_type

        store = _registry(registry, params)
        state, versions = store.aliases(), store.versions()
        if as_json:
            typer.echo(json.dumps({"aliases": {**state.mapping(), "generation": state.generation},
                                   "versions": [{k: m.get(k) for k in ("version", "created_at", "run", "metrics")}
                                                | {"gate_passed": (m.get("gate") or {}).get("passed"),
                                                   "aliases": state.names_for(m["version"])} for m in versions]},
                                  indent=2))
            return
        headline = [task_type(task_of(m)).headline_metric for m in versions]
        rows = [[m["version"], m["created_at"][:19].replace("T", " "), fmt(m["metrics"].get(key)),
                 fmt(m["metrics"].get("macro_f1")),
                 {True: "pass", False: "FAIL", None: "-"}[(m.get("gate") or {}).get("passed")],
                 ",".join(state.names_for(m["version"])), (m["lineage"]["code"].get("commit") or "-")[:10]]
                for m, key in zip(versions, headline, strict=True)]
        damaged = store.damaged()
        rows += [[problem.version, "DAMAGED", "-", "-", "-", ",".join(state.names_for(problem.version)), "-"]
                 for problem in damaged]
        # The headline column is named after the newest version's task type (one registry holds one, normally).
        lead = METRIC_NAMES.get(headline[-1], headline[-1]).upper() if headline else "ACCURACY"
        typer.echo(table(["VERSION", "CREATED (UTC)", lead, "MACRO-F1", "GATE", "ALIASES", "COMMIT"], rows))
        typer.echo(f"\n{len(versions)} version(s) in {store.store.location}; {_alias_line(state)}")
        if damaged:
            raise IntegrityError(f"{len(damaged)} damaged version(s): " + "; ".join(map(str, damaged)))

    guarded(action)


@app.command("show")
def models_show(version: Annotated[str, typer.Argument(help="Version id, unique prefix or alias name.")],
                registry: RegistryOption = None, params: ParamsOption = DEFAULT_PARAMS,
                as_json: JsonOption = False) -> None:
    """One version: lineage (datasets, dvc.lock, commit, base model, params), metrics, gate report, files."""
    def action() -> None:
        store = _registry(registry, params)
        manifest = store.require(version)
        if as_json:
            typer.echo(json.dumps(manifest, indent=2, sort_keys=True))
            return
        typer.echo(describe_version(manifest, store.aliases().names_for(manifest["version"])))

    guarded(action)


def describe_version(m: dict[str, Any], aliases: list[str]) -> str:
    """A version's manifest as a page a person reads: the task type's metrics and decision among the rest."""
    from gradus.task_types.seam import task_of, task_type

    lineage, gate = m["lineage"], m.get("gate") or {}
    kind = task_type(task_of(m))
    shown = [*kind.report_metrics, *(k for k in ("weighted_f1", "hamming_loss", "ece", "test_rows")
                                     if k in m["metrics"])]
    code, base = lineage["code"], lineage["base_model"]
    lines = [f"version     {m['version']}   aliases: {', '.join(aliases) or 'none'}",
             f"created     {m['created_at']} by run {m['run']}",
             f"task        {task_of(m)}",
             f"base model  {base['name']} @ {base['revision']}",
             f"code        commit {code.get('commit')} ({code.get('branch')})"
             + (f", modified: {', '.join(code['modified'])}" if code.get("modified") else ""),
             "datasets    " + ", ".join(f"{k} md5 {v}" for k, v in lineage["datasets"].items()),
             "sources     " + ", ".join(_source(s) for s in lineage["params"]["data"]["sources"]),
             *[f"catalogue   {e['location']} ({e['file']}; added {e['added_at']} by {e['added_by']}: {e['reason']})"
               for e in lineage.get("catalogue") or []],
             "metrics     " + ", ".join(f"{k} {fmt(m['metrics'].get(k))}" for k in shown),
             *decision_lines(lineage.get("decision")),
             f"gate        {'passed' if gate.get('passed') else 'FAILED'} ({gate.get('mode')}"
             + (f" vs {gate['champion']}" if gate.get("champion") else "") + ")"]
    lines += [f"              - {reason}" for reason in gate.get("reasons", [])]
    lines += variant_lines(m)
    lines += ["", "dvc.lock (md5 of every stage output):"]
    for stage, entry in lineage["dvc_lock"].items():
        lines += [f"  {stage:<9} {path}  {md5}" for path, md5 in entry["outs"].items()]
    lines += ["", table(["FILE", "SIZE", "SHA256"], [[name, info["size"], info["sha256"]]
                                                       for name, info in m["files"].items()])]
    return "\n".join(lines)


def decision_lines(decision: dict[str, Any] | None) -> list[str]:
    """How the version decodes its scores (the thresholds chosen on validation), where it has a decision."""
    if not decision:
        return []
    own = decision.get("per_label") or {}
    return [f"decision    threshold {decision.get('global')} for every label"
            + (f", own thresholds for {len(own)}: " + ", ".join(f"{k} {v}" for k, v in list(own.items())[:8])
               + (" ..." if len(own) > 8 else "") if own else ""),
            f"              rule: {decision.get('rule', '-')}"]


def _source(source: dict[str, Any]) -> str:
    where = source.get("path") or source.get("uri") or source.get("name")
    return f"{source.get('kind')} {where}" if where else str(source.get("kind"))


def variant_lines(m: dict[str, Any]) -> list[str]:
    """The version's compressed variants with their parity (servable or not, and why), or its members."""
    if ensemble := m["lineage"].get("ensemble"):
        return ["ensemble    soft voting of " + ", ".join(f"{e['version']} (weight {e['weight']:g})"
                                                       for e in ensemble["members"])]
    report = m["metrics"].get("compression") or {}
    if not report.get("variants"):
        return ["variants    none (torch only; the compress stage was off or did not run)"]
    from gradus.task_types.base import METRIC_NAMES
    from gradus.task_types.seam import task_of, task_type

    ref, key = report["reference"], task_type(task_of(m)).headline_metric
    name_of = METRIC_NAMES.get(key, key)
    lines = [f"variants    vs torch ({ref['texts_per_s']:g} texts/s, {name_of} {fmt(ref[key])}):"]
    for name, v in report["variants"].items():
        state = "servable" if v["passed"] and v["file"] in m["files"] else "NOT servable"
        lines.append(f"  {name:<10} {state}: agreement {v['agreement']:.4f}, {name_of} {fmt(v[key])} "
                     f"(drop {v[f'{key}_drop']:+.4f}), {v['texts_per_s']:g} texts/s ({v['speedup']:.2f}x), "
                     f"{v['bytes'] / 1e6:.1f} MB")
        lines += [f"              - {reason}" for reason in v["reasons"]]
    return lines


@app.command("promote")
def models_promote(version: Annotated[str, typer.Argument(help="Version id, unique prefix or alias name.")],
                   reason: ReasonOption = "promoted by hand", expect_generation: ExpectOption = None,
                   force: Annotated[bool, typer.Option(help="Promote even though its gate failed.")] = False,
                   registry: RegistryOption = None, params: ParamsOption = DEFAULT_PARAMS) -> None:
    """Make a version the champion (the old champion becomes `previous`)."""
    def action() -> None:
        store = _registry(registry, params)
        manifest = store.require(version)
        if problems := store.record_problems(manifest["version"]):
            raise IntegrityError("; ".join(map(str, problems)))
        verdict = store.verdict(manifest["version"])  # the latest recorded verdict, checked against the audit log
        if not (verdict or {}).get("passed") and not force:
            raise GradusError(f"{manifest['version']} did not pass the gate ("
                              + "; ".join((verdict or {}).get("reasons", ["no gate verdict recorded"]))
                              + "); use --force --reason '...' to promote it anyway")
        before = store.aliases()
        after = store.promote(manifest["version"], run=_cli_run(), reason=reason,
                              expected_generation=expect_generation)
        typer.echo(f"champion: {before.champion or 'none'} -> {after.champion} (generation {after.generation})")

    guarded(action)


@app.command("ensemble")
def models_ensemble(members: Annotated[list[str], typer.Argument(
                        help="Two or more members as REF[=WEIGHT]: a version id, prefix or alias (weight 1).")],
                    params: ParamsOption = DEFAULT_PARAMS, as_json: JsonOption = False) -> None:
    """Gate a soft-voting ensemble of registered versions like a trained model: scored on the project's test
    split against the champion, registered as a version, and made `candidate` on a pass (then release it).
    The test split is the newest run's (a flow run's workspace, or the project's own `dvc repro`)."""
    def action() -> None:
        from gradus.task_types.base import METRIC_NAMES
        from gradus.task_types.seam import task_type
        from gradus.workspace import newest_outputs
        from tasks.gate import gate_ensemble

        root, loaded = params.resolve().parent, load_params(params)
        result = gate_ensemble(root, loaded, members, _cli_run(), newest_outputs(root, loaded))
        if as_json:
            typer.echo(json.dumps(result, indent=2))
            return
        key = task_type(loaded.model.task).headline_metric
        typer.echo(f"ensemble {result['version']}: {METRIC_NAMES.get(key, key)} {fmt(result[key])}, macro-F1 "
                   f"{fmt(result['macro_f1'])}; gate {'passed' if result['passed'] else 'FAILED'}"
                   + (f" vs champion {result['champion']}" if result["champion"] else ""))
        typer.echo("".join(f"  - {reason}\n" for reason in result["reasons"]), nl=False)
        if not result["passed"]:
            raise typer.Exit(1)
        typer.echo(f"candidate: {result['version']}; release it with `gradus release {result['version']}`")

    guarded(action)


@app.command("rollback")
def models_rollback(reason: ReasonOption = "rolled back by hand", expect_generation: ExpectOption = None,
                    registry: RegistryOption = None, params: ParamsOption = DEFAULT_PARAMS) -> None:
    """Make the previous champion the champion again."""
    def action() -> None:
        store = _registry(registry, params)
        before = store.aliases()
        after = store.rollback(run=_cli_run(), reason=reason, expected_generation=expect_generation)
        typer.echo(f"champion: {before.champion} -> {after.champion} (generation {after.generation})")

    guarded(action)


@app.command("canary")
def models_canary(version: Annotated[str | None, typer.Argument(help="Version to send traffic to.")] = None,
                  weight: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of traffic.")] = 0.1,
                  clear: Annotated[bool, typer.Option(help="Remove the canary.")] = False,
                  reason: ReasonOption = "canary set by hand", expect_generation: ExpectOption = None,
                  registry: RegistryOption = None, params: ParamsOption = DEFAULT_PARAMS) -> None:
    """Set (or clear) the canary version and its traffic weight, for a gradual release."""
    def action() -> None:
        if version is None and not clear:
            raise GradusError("give a VERSION, or --clear")
        store = _registry(registry, params)
        after = store.set_canary(None if clear else version, weight, run=_cli_run(), reason=reason,
                                 expected_generation=expect_generation)
        typer.echo(_alias_line(after))

    guarded(action)


@app.command("shadow")
def models_shadow(version: Annotated[str | None, typer.Argument(help="Version to shadow live traffic.")] = None,
                  clear: Annotated[bool, typer.Option(help="Stop shadowing.")] = False,
                  reason: ReasonOption = "shadow set by hand", expect_generation: ExpectOption = None,
                  registry: RegistryOption = None, params: ParamsOption = DEFAULT_PARAMS) -> None:
    """Send a copy of live traffic to a version: the service logs its answers (alias `shadow`), never returns
    them; the release analysis compares them with the champion's on the same requests."""
    def action() -> None:
        if version is None and not clear:
            raise GradusError("give a VERSION, or --clear")
        store = _registry(registry, params)
        after = store.set_shadow(None if clear else version, run=_cli_run(), reason=reason,
                                 expected_generation=expect_generation)
        typer.echo(_alias_line(after))

    guarded(action)


@app.command("diff")
def models_diff(first: Annotated[str, typer.Argument(help="Version (or alias).")],
                second: Annotated[str, typer.Argument(help="Version (or alias).")],
                registry: RegistryOption = None, params: ParamsOption = DEFAULT_PARAMS) -> None:
    """What differs between two versions: metrics, params, datasets, code, base model, files."""
    def action() -> None:
        store = _registry(registry, params)
        a, b = store.require(first), store.require(second)
        typer.echo(diff_versions(a, b))

    guarded(action)


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
    rows = [[k, fmt(metrics_a.get(k)), fmt(metrics_b.get(k)),
             f"{metrics_b[k] - metrics_a[k]:+.4f}" if _number(metrics_a.get(k)) and _number(metrics_b.get(k)) else ""]
            for k in sorted(set(metrics_a) | set(metrics_b)) if metrics_a.get(k) != metrics_b.get(k)]
    sections.append(table(["METRIC", a["version"], b["version"], "CHANGE"], rows) if rows else "metrics: identical")
    for title, key in (("PARAM", "params"), ("DATASET", "datasets"), ("BASE MODEL", "base_model"), ("CODE", "code")):
        left, right = _flatten(a["lineage"][key]), _flatten(b["lineage"][key])
        rows = [[k, fmt(left.get(k)), fmt(right.get(k))] for k in sorted(set(left) | set(right))
                if left.get(k) != right.get(k)]
        sections.append(table([title, a["version"], b["version"]], rows) if rows else f"{key}: identical")
    changed = sorted(n for n in set(a["files"]) | set(b["files"]) if a["files"].get(n) != b["files"].get(n))
    sections.append("files changed: " + (", ".join(changed) or "none"))
    return "\n\n".join(sections)


@app.command("verify")
def models_verify(version: Annotated[str | None, typer.Argument(help="One version; default: all.")] = None,
                  registry: RegistryOption = None, params: ParamsOption = DEFAULT_PARAMS) -> None:
    """Check everything that vouches for a version: manifest against its id and registration record, every
    file's sha256, unlisted files, the recorded gate verdict; and, for all, that every alias names an intact
    version. Exit 4 naming each problem."""
    def action() -> None:
        store = _registry(registry, params)
        manifests = [store.require(version)] if version else store.versions()
        problems = store.verify(version)
        for manifest in manifests:
            own = [p for p in problems if p.version == manifest["version"]]
            typer.echo(f"{'ok' if not own else 'FAILED':<7} {manifest['version']} ({len(manifest['files'])} files)")
        for problem in problems:
            if problem.version not in {m["version"] for m in manifests}:
                typer.echo(f"{'FAILED':<7} {problem.version}")
        if problems:
            raise IntegrityError(f"{len(problems)} problem(s): " + "; ".join(map(str, problems)))

    guarded(action)


@app.command("log")
def models_log(registry: RegistryOption = None, params: ParamsOption = DEFAULT_PARAMS,
               as_json: JsonOption = False) -> None:
    """The audit log: every registration, alias change and refused change, oldest first."""
    def action() -> None:
        events = _registry(registry, params).audit_log()
        if as_json:
            typer.echo(json.dumps(events, indent=2, sort_keys=True))
            return
        typer.echo(table(["AT (UTC)", "ACTION", "OUTCOME", "VERSION", "RUN", "BY", "REASON"],
                          [[e["at"][:23].replace("T", " "), e["action"], e["outcome"], e.get("version"), e["run"],
                            e["by"], e["reason"][:80]] for e in events]))

    guarded(action)


