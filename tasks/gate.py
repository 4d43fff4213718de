"""Gate stage: may the newly trained model (the challenger) replace the champion?

The first model must clear absolute thresholds. Afterwards the champion (loaded, checksum-verified, from the
registry) and the challenger are scored on the same test split, and the challenger passes only if it is
not worse on macro-F1 beyond `gate.margin` at the lower bound of a paired-bootstrap confidence interval,
loses no more than `gate.max_class_recall_drop` recall on any class with enough support, keeps its
behavioral stability, and stays inside the latency budget. McNemar's exact test is reported alongside.

The champion lives outside DVC, so dvc.yaml marks this stage always_changed: every `dvc repro` re-judges.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from gradus import lineage
from gradus.config.pipeline import GateConfig, StageParams
from gradus.ensemble import ENSEMBLE_FILE, build_ensemble, ensemble_spec
from gradus.errors import DataError
from gradus.io import read_json, write_json
from gradus.modeling import load_label_map, pick_device
from gradus.registry.candidates import apply_gate
from gradus.registry.versions import Registry, project_registry
from gradus.reports import gate_markdown
from gradus.servable import load_version
from gradus.task_types.base import DEFAULT_TASK, METRIC_NAMES, Champion, Check
from gradus.task_types.seam import cross_task_check, task_of, task_type
from tasks.evaluate import evaluate_loaded


def absolute_checks(metrics: dict[str, Any], cfg: GateConfig, task: str = DEFAULT_TASK) -> list[Check]:
    """Floors every model must clear (the only quality bar for the first one; the task type names them), and,
    when set, the gain over the frozen-encoder probe that fine-tuning must show."""
    checks = [Check(name, metrics[key] >= floor,
                    f"test {METRIC_NAMES.get(key, key)} {metrics[key]:.4f} vs gate.{name} {floor:.4f}")
              for name, key, floor in task_type(task).floors(cfg)]
    if cfg.min_gain_over_probe is not None:
        checks.append(probe_check(metrics, cfg.min_gain_over_probe, task_type(task).headline_metric))
    return checks


def probe_check(metrics: dict[str, Any], min_gain: float, key: str = "accuracy") -> Check:
    """Does the model beat the frozen base model + logistic regression by gate.min_gain_over_probe (in the task
    type's headline figure: test accuracy for one label per text)?"""
    probe = metrics.get("baseline_probe")
    if probe is None:
        return Check("gain_over_probe", False, "gate.min_gain_over_probe is set but no probe was measured: set "
                                               "evaluate.probe: true (or gate.min_gain_over_probe: null)")
    gain = metrics[key] - probe[key]
    name = METRIC_NAMES.get(key, key)
    return Check("gain_over_probe", gain >= min_gain,
                 f"test {name} {metrics[key]:.4f} vs the frozen-encoder probe's {probe[key]:.4f}: "
                 f"gain {gain:+.4f}, gate.min_gain_over_probe {min_gain:+.4f}"
                 + ("" if gain >= min_gain else " (fine-tuning did not pay over the frozen base model here)"))


def operational_checks(metrics: dict[str, Any], behavioral: dict[str, Any], cfg: GateConfig) -> list[Check]:
    """Behavioral stability (thresholds: evaluate.behavioral) and the latency budget."""
    checks = [Check(f"behavioral_{name}", bool(item["passed"]),
                    f"prediction unchanged under {name} perturbation for {item['stability']:.1%} of "
                    f"{item['rows']} rows (evaluate.behavioral.min_stability.{name} {item['min_stability']:.1%})")
              for name, item in behavioral.items()]
    p95 = metrics.get("latency", {}).get("batch1_p95_ms")
    if p95 is None:
        checks.append(Check("latency_p95", False, "no latency measured (empty test split?)"))
    else:
        checks.append(Check("latency_p95", p95 <= cfg.max_latency_ms_p95,
                            f"batch-1 p95 latency {p95:.1f} ms on {metrics['latency'].get('device')} vs "
                            f"gate.max_latency_ms_p95 {cfg.max_latency_ms_p95:g} ms"))
    return checks


def verdict(metrics: dict[str, Any], behavioral: dict[str, Any], actual: list[str], predicted: list[str],
            challenger_labels: list[str], champion: Champion | None, cfg: GateConfig,
            task: str = DEFAULT_TASK) -> dict[str, Any]:
    """The gate's decision with every check, its numbers and the reasons for a failure. `task` is the
    challenger's task type; a champion of another one is refused before any comparison."""
    kind = task_type(task)
    checks = absolute_checks(metrics, cfg, task)
    comparison: dict[str, Any] = {}
    if champion is not None:
        refused = cross_task_check(champion.task, task, champion.version)
        if refused is not None:
            checks.append(refused)
        else:
            comparison, compared = task_type(task).compare(actual, predicted, champion, challenger_labels, cfg)
            checks += compared
    checks += operational_checks(metrics, behavioral, cfg)
    return {
        "passed": all(c.passed for c in checks),
        "mode": "first_model" if champion is None else "challenger",
        "champion": champion.version if champion else None,
        "challenger": {**{key: metrics[key] for key in dict.fromkeys(
                           (kind.headline_metric, "macro_f1", kind.primary_metric)) if key in metrics},
                       "labels": len(challenger_labels), "test_rows": len(actual),
                       **(probe_gain(metrics, kind.headline_metric) if "baseline_probe" in metrics else {})},
        "checks": [asdict(c) for c in checks],
        "reasons": [c.detail for c in checks if not c.passed],
        "params": cfg.model_dump(),
        **comparison,
    }




def probe_gain(metrics: dict[str, Any], key: str) -> dict[str, float]:
    """The probe's headline figure and the model's gain over it (`probe_accuracy` for one label per text)."""
    probe = metrics["baseline_probe"][key]
    return {f"probe_{key}": probe, "gain_over_probe": round(metrics[key] - probe, 6)}


def gate_numbers(report: dict[str, Any], task: str = DEFAULT_TASK) -> dict[str, float]:
    """Numbers only, for `dvc metrics show` / `dvc exp show`."""
    numbers: dict[str, float] = {"passed": int(report["passed"]),
                                 "failed_checks": sum(not c["passed"] for c in report["checks"])}
    if "bootstrap" in report:
        boot = report["bootstrap"]
        drops = report.get("per_class", report.get("per_label", report.get("per_type"))) or []
        numbers.update({f"{task_type(task).primary_metric}_delta": round(boot["delta"], 6),
                        "ci_low": round(boot["low"], 6), "ci_high": round(boot["high"], 6)})
        if "mcnemar" in report:
            numbers["mcnemar_p"] = round(report["mcnemar"]["p_value"], 6)
        numbers["worst_class_recall_drop"] = drops[0]["drop"] if drops else 0.0
    return numbers


def champion_predictions(registry: Registry, texts: list[str], device: str, batch_size: int) -> Champion | None:
    """The champion's predicted labels on these texts, or None when there is no champion yet."""
    state = registry.aliases()
    if state.champion is None:
        return None
    champion = load_version(registry, state.champion, device)
    task = task_of(registry.require(state.champion))
    return Champion(state.champion, list(champion.labels), champion.predict(texts, batch_size).answers(), task)


def judge(registry: Registry, test: pd.DataFrame, metrics: dict[str, Any], behavioral: dict[str, Any],
          predicted: list[str], labels: list[str], params: StageParams) -> dict[str, Any]:
    """The verdict on a challenger's test predictions against the registry's champion (scored now, on the
    same texts), with the alias generation it was made against: the aliases move only if nobody changed them
    since."""
    generation = registry.aliases().generation
    champion = champion_predictions(registry, list(test["text"]), pick_device(params.train.device),
                                    params.evaluate.batch_size)
    report = verdict(metrics, behavioral, task_type(params.model.task).targets(test), predicted, labels, champion,
                     params.gate, params.model.task)
    report["registry"] = {"uri": registry.store.location, "alias_generation": generation}
    return report


def run(params: StageParams) -> dict[str, Any]:
    """Judge the model in paths.model; write reports/gate.json, gate.md and the numeric DVC metric."""
    paths = params.paths
    test_file = Path(paths.splits) / "test.parquet"
    test, predictions = pd.read_parquet(test_file), pd.read_parquet(paths.predictions)
    kind = task_type(params.model.task)
    answers = kind.targets(predictions.rename(columns={"predicted": kind.target_column}))
    if len(test) != len(predictions) or kind.targets(test) != kind.targets(
            predictions.rename(columns={"actual": kind.target_column})):
        raise DataError(f"{paths.predictions} does not match {test_file}; rerun the evaluate stage (dvc repro)")
    report = judge(project_registry(Path.cwd(), params), test, read_json(Path(paths.metrics)),
                   read_json(Path(paths.behavioral)), answers, load_label_map(Path(paths.model)), params)
    write_json(report, Path(paths.gate_report))
    Path(paths.gate_markdown).write_text(gate_markdown(report), encoding="utf-8")
    write_json(gate_numbers(report, params.model.task), Path(paths.gate_metrics))
    return {"passed": report["passed"], "mode": report["mode"], "reasons": report["reasons"]}


# ---------------------------------------------------------------------------------------- ensembles
# An ensemble of registered versions goes through the same gate as a trained model: scored on the project's
# test split, judged against the champion, registered as a version of its own (its one file names the
# members and weights) and, on a pass, made the `candidate` that the release flow takes.


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


def gate_ensemble(root: Path, params: StageParams, specs: list[str], run: str,
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
    headline = task_type(params.model.task).headline_metric
    return {"version": manifest["version"], "passed": report["passed"], "reasons": report["reasons"],
            headline: result.metrics[headline], "macro_f1": result.metrics["macro_f1"],
            "members": spec["members"], "champion": report["champion"], "aliases": moved["aliases"]}
