"""An ensemble of registered versions through the same gate as a trained model: scored on the project's test
split, judged against the champion, registered as a version of its own (its one file names the members and
weights) and, on a pass, made the `candidate` that the release flow takes."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from gradus import lineage
from gradus.config import Params
from gradus.ensemble import ENSEMBLE_FILE, build_ensemble, ensemble_spec
from gradus.errors import DataError
from gradus.io import write_json
from gradus.modeling import pick_device
from gradus.registry.versions import project_registry
from gradus.servable import load_version
from tasks.evaluate import evaluate_loaded
from tasks.gate import judge
from tasks.register import apply_gate


def parse_members(specs: list[str]) -> list[tuple[str, float]]:
    """`REF[=WEIGHT]` strings (a version id, prefix or alias; weight 1 when not given)."""
    members = []
    for spec in specs:
        ref, _, weight = spec.partition("=")
        try:
            members.append((ref.strip(), float(weight) if weight else 1.0))
        except ValueError:
            raise DataError(f"ensemble member {spec!r}: the weight after '=' must be a number") from None
    return members


def gate_ensemble(root: Path, params: Params, specs: list[str], run: str,
                  data_dir: Path | None = None) -> dict[str, Any]:
    """Score, gate, register and (on a pass) make candidate the soft-voting ensemble of `specs`, on the splits
    and dvc.lock in data_dir (the newest run's workspace, or the project)."""
    data_dir = data_dir or root
    splits = data_dir / params.paths.splits
    if not (splits / "test.parquet").is_file():
        raise DataError(f"{splits / 'test.parquet'}: no test split to score the ensemble on; run `gradus run` first")
    registry = project_registry(root, params)
    members = [(registry.resolve(ref), weight) for ref, weight in parse_members(specs)]
    device = pick_device(params.train.device)
    model = build_ensemble([load_version(registry, version, device) for version, _ in members], [w for _, w in members])
    train, test = (pd.read_parquet(splits / f"{name}.parquet") for name in ("train", "test"))
    result = evaluate_loaded(model, train, test, params, str(splits / "test.parquet"))
    report = judge(registry, test, result.metrics, result.behavioral, result.predicted, list(model.labels), params)
    spec = ensemble_spec(members, list(model.labels))
    with tempfile.TemporaryDirectory() as folder:
        write_json(spec, Path(folder) / ENSEMBLE_FILE)
        why = "gate passed" if report["passed"] else "gate failed: " + "; ".join(report["reasons"])
        base = registry.require(members[0][0])["lineage"]["base_model"]
        made = lineage.collect_ensemble(data_dir, params, spec, base, root)
        manifest, _ = registry.register(folder, made, result.metrics,
                                        report, run, reason=f"ensemble of {len(members)} versions; {why}")
    moved = apply_gate(root, params, manifest["version"], run, gate=report)
    return {"version": manifest["version"], "passed": report["passed"], "reasons": report["reasons"],
            "accuracy": result.metrics["accuracy"], "macro_f1": result.metrics["macro_f1"],
            "members": spec["members"], "champion": report["champion"], "aliases": moved["aliases"]}
