"""A run's model enters the registry: registered with its lineage, then made `candidate` only if the gate passed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradus import lineage
from gradus.compression import passed_variants
from gradus.config.pipeline import StageParams
from gradus.io import read_json
from gradus.registry.aliases import AliasState
from gradus.registry.versions import project_registry


def register_version(root: Path, params: StageParams, run: str, why: str | None = None,
                     run_dir: Path | None = None) -> dict[str, Any]:
    """Register paths.model of the run in run_dir (the project itself unless a flow run's workspace) in the
    project's registry; idempotent: the same model and lineage give back the same version."""
    registry = project_registry(root, params)
    run_dir = run_dir or root
    gate = read_json(run_dir / params.paths.gate_report)
    verdict = "gate passed" if gate["passed"] else "gate failed: " + "; ".join(gate["reasons"])
    metrics, variants = read_json(run_dir / params.paths.metrics), {}
    report_file = run_dir / params.paths.compression_report
    if params.compress.enabled and report_file.is_file():  # only variants that passed parity become servable
        report = read_json(report_file)
        metrics["compression"] = report
        variants = passed_variants(report, run_dir / params.paths.compressed)
    manifest, created = registry.register(
        run_dir / params.paths.model, lineage.collect(run_dir, params, code_root=root), metrics, gate, run,
        reason=f"{why}; {verdict}" if why else verdict, extra_files=variants)
    return {"version": manifest["version"], "created": created}


def apply_gate(root: Path, params: StageParams, version: str, run: str,
               gate: dict[str, Any] | None = None, run_dir: Path | None = None) -> dict[str, Any]:
    """On a pass: `candidate` → version (and `champion` if there is none), by compare-and-swap against
    the alias generation the gate judged with. On a fail: no alias moves; the audit log says why.
    The verdict is the gate stage's report unless given (an ensemble's)."""
    registry = project_registry(root, params)
    gate = gate or read_json((run_dir or root) / params.paths.gate_report)
    if not gate["passed"]:
        registry.audit("gate", version=version, run=run, reason="; ".join(gate["reasons"]), outcome="failed")
        return {"moved": False, "aliases": registry.aliases().mapping()}

    def change(state: AliasState) -> dict[str, Any]:
        return {"candidate": version, "champion": state.champion or version}

    before = registry.aliases()
    after = registry.update_aliases(change, action="gate-pass", run=run, reason=f"gate passed ({gate['mode']})",
                                    expected_generation=gate["registry"]["alias_generation"])
    return {"moved": after.generation != before.generation, "aliases": after.mapping()}
