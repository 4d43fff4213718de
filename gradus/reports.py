"""Every report a person reads, rendered in one place: the training run's console summary and its Prefect
artifacts (metrics, validation, compression), the gate's verdict, the drift monitor's summary, a search's
proposal and a release's progress. Plain functions of the reports' dicts; no I/O."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradus.task_types.base import DEFAULT_TASK, METRIC_NAMES
from gradus.task_types.seam import task_type


def format_result(result: dict[str, Any]) -> str:
    """The closing summary a person reads: key metrics, then where every output is."""
    metrics, data = result["metrics"], result["data"]
    task = result.get("task", DEFAULT_TASK)
    baseline = metrics.get("baseline_tfidf", {})
    lines = [
        "",
        "gradus training pipeline finished",
        f"  data           {data['rows_in']} rows in, {data['rows_kept']} kept, "
        f"{data['rows_quarantined']} quarantined with reasons (see quarantine below)",
        *[metric_line(key, metrics, baseline, task_type(task).baseline_name) for key in task_type(task).report_metrics],
        *probe_lines(metrics, task),
        *training_lines(result.get("training") or {}, task),
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


def metric_line(key: str, metrics: dict[str, Any], baseline: dict[str, Any], name: str = "TF-IDF baseline") -> str:
    """One test figure, with the task type's cheap baseline's (`name`: TF-IDF; the entities' dictionary) and the
    majority class's, for accuracy, where measured."""
    label = "test " + METRIC_NAMES.get(key, key)
    beside = [f"{name} {baseline[key]:.4f}"] if key in baseline else []
    if key == "accuracy" and "majority_class_accuracy" in metrics:
        beside.append(f"majority class {metrics['majority_class_accuracy']:.4f}")
    return (f"  {label:<15}" if len(label) < 15 else f"  {label} ") + f"{metrics[key]:.4f}" + (
        f"   ({', '.join(beside)})" if beside else "")


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


def probe_lines(metrics: dict[str, Any], task: str = DEFAULT_TASK) -> list[str]:
    """The frozen-encoder probe beside the model, and what fine-tuning added over it (in the task type's headline
    figure; nothing when absent)."""
    probe = metrics.get("baseline_probe")
    if not probe:
        return []
    key = task_type(task).headline_metric
    gain = metrics[key] - probe[key]
    verdict = "fine-tuning paid" if gain > 0 else "fine-tuning did NOT beat the frozen base model"
    figures = ", ".join(f"{METRIC_NAMES.get(k, k)} {probe[k]:.4f}" for k in dict.fromkeys((key, "macro_f1")))
    return [f"  probe          frozen encoder + logistic regression: {figures} ({probe['seconds']:.0f} s); "
            f"the model {gain:+.4f}: {verdict}"]


def training_lines(summary: dict[str, Any], task: str = DEFAULT_TASK) -> list[str]:
    """How the model was made (train.method) and, where the run fitted the probe, whether fine-tuning beat
    it on the validation split (the task type's primary metric), said plainly (nothing for a plain fine-tuning)."""
    probe = summary.get("probe")
    if not probe:
        return []
    kind = task_type(task)
    key, name = kind.primary_metric, kind.primary_metric_name
    method, probed = summary.get("method", "finetune"), probe[f"val_{key}"]
    if method == "probe":
        return [f"  training       train.method probe: the frozen encoder and the probe's head (C {probe['C']:g}), "
                f"val {name} {probed:.4f}; nothing fine-tuned"]
    verdict = ("fine-tuning paid" if summary.get("finetuning_beat_probe") else
               "fine-tuning did NOT beat the frozen-encoder probe; train.method: probe trains the probe "
               "alone in minutes, auto keeps the better")
    kept = (f"; auto kept the {'probe' if summary.get('chosen') == 'probe' else 'fine-tuned model'}"
            if method == "auto" else "")
    return [f"  training       {method}: val {name} fine-tuned {summary.get(f'finetuned_val_{key}', 0):.4f}, "
            f"probe {probed:.4f}: {verdict}{kept}"]


def metrics_markdown(metrics: dict[str, Any], stages: list[dict[str, Any]], changes: dict[str, Any],
                     task: str = DEFAULT_TASK) -> str:
    """The run's metrics (the task type's), stage outcomes and parameter changes as a markdown artifact."""
    baseline, probe = metrics.get("baseline_tfidf", {}), metrics.get("baseline_probe") or {}
    lines = ["# Training pipeline", "", f"| metric | model | {task_type(task).baseline_name} | frozen-encoder probe |",
             "|---|---|---|---|"]
    for key in task_type(task).report_metrics:
        lines.append(f"| {key} | {metrics.get(key, float('nan')):.4f} | {baseline.get(key, float('nan')):.4f} | "
                     f"{probe.get(key, float('nan')):.4f} |")
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


def compression_markdown(variants: dict[str, Any], task: str = DEFAULT_TASK) -> str:
    """The compress stage's variants: parity, speed, and whether they were registered as servable."""
    if not variants:
        return ""
    key = task_type(task).headline_metric
    lines = ["", "## Compressed variants", "",
             f"| variant | servable | agreement | {METRIC_NAMES.get(key, key)} drop | speed vs torch |",
             "|---|---|---|---|---|"]
    lines += [f"| {name} | {'yes' if v['passed'] else '**no**: ' + '; '.join(v['reasons'])} | {v['agreement']:.4f} "
              f"| {v[f'{key}_drop']:+.4f} | {v['speedup']:.2f}x |" for name, v in variants.items()]
    return "\n".join(lines) + "\n"


def gate_markdown(report: dict[str, Any]) -> str:
    """The verdict as a page a person reads (Prefect artifact, reports/gate.md)."""
    title = "PASSED" if report["passed"] else "FAILED"
    against = f"champion {report['champion']}" if report["champion"] else "absolute thresholds (no champion yet)"
    lines = [f"# Gate {title}", "", f"Challenger judged against {against}.", ""]
    if report["reasons"]:
        lines += ["## Why it failed", "", *[f"- {reason}" for reason in report["reasons"]], ""]
    lines += ["| check | result | detail |", "|---|---|---|"]
    lines += [f"| {c['name']} | {'pass' if c['passed'] else '**FAIL**'} | {c['detail']} |" for c in report["checks"]]
    if "mcnemar" in report:
        m = report["mcnemar"]
        lines += ["", f"McNemar exact test: p = {m['p_value']:.4g} (only champion right on "
                      f"{m['only_champion_correct']} rows, only challenger right on {m['only_challenger_correct']})."]
        labels = report["labels"]
        lines += [f"Labels: {labels['shared']} shared, added {labels['added'] or 'none'}, removed "
                  f"{labels['removed'] or 'none'}; {labels['rows_compared']} test rows compared, "
                  f"{labels['rows_excluded']} excluded (label unknown to one model)."]
        worst = report["per_class"][:5]
        if worst:
            lines += ["", "| class | support | recall champion | recall challenger | drop |", "|---|---|---|---|---|"]
            lines += [f"| {r['label']} | {r['support']} | {r['recall_champion']:.3f} | {r['recall_challenger']:.3f} "
                      f"| {r['drop']:+.3f} |" for r in worst]
    return "\n".join(lines) + "\n"


def drift_markdown(summary: dict[str, Any], triggered: str | None) -> str:
    """Signal by signal, the decision and its reasons, with links to the HTML reports."""
    decision = summary["decision"]
    lines = [f"# Drift monitor: {'retrain' if decision['retrain'] else 'no retrain'}", "",
             f"Batch `{summary['current']}` ({summary['rows']['current']} rows) vs the training split of champion "
             f"{summary['champion']} ({summary['rows']['reference']} rows).", "",
             "| signal | score | method | threshold | drifted |", "|---|---|---|---|---|"]
    for name, signal in summary["signals"].items():
        drifted = "**yes**" if signal["drifted"] else "no"
        lines.append(f"| {name} | {signal['score']:.4f} | {signal['method']} | {signal['threshold']:g} | {drifted} |")
    sample = summary["model_sample"]
    if sample.get("sampled"):
        lines += ["", f"Model signals computed on seeded samples: {sample['rows']} rows "
                      "(drift.max_model_rows, drift.reference_model_rows)."]
    lines += ["", "| check | passed | detail |", "|---|---|---|"]
    lines += [f"| {name} | {'yes' if check['passed'] else 'no'} | {check['detail']} |"
              for name, check in decision["checks"].items()]
    if triggered:
        lines += ["", f"Started training flow run `{triggered}`."]
    lines += ["", *[f"[{Path(path).name}]({Path(path).as_uri()})" for path in summary["reports"]]]
    return "\n".join(lines)


def proposal_markdown(proposal: dict[str, Any]) -> str:
    """The trials (best first) and how to adopt the best one."""
    lines = [f"# Search {proposal['study']}", "", f"Objective: {proposal['objective']}.", "",
             "| trial | experiment | state | val macro-F1 | evaluations | params |", "|---|---|---|---|---|---|"]
    ranked = sorted(proposal["trials"], key=lambda t: -(t["val_macro_f1"] or 0.0))
    for t in ranked:
        score = f"{t['val_macro_f1']:.4f}" if t["val_macro_f1"] is not None else "-"
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items())
        lines.append(f"| {t['number']} | {t['experiment']} | {t['state']} | {score} | {t['evaluations']} | {params} |")
    best = proposal["best"]
    if best:
        lines += ["", f"Best: trial {best['number']} ({best['experiment']}), val macro-F1 {best['val_macro_f1']:.4f}.",
                  "params.yaml is unchanged; to adopt it:", ""] + [f"    {command}" for command in best["adopt"]]
    return "\n".join(lines)


def release_markdown(version: str, champion: str, history: list[dict[str, Any]], outcome: str, detail: str) -> str:
    """A release so far as markdown: outcome, and each step's last analysis."""
    lines = [f"# Release of {version}: {outcome}", "", f"Champion before: {champion}.", "",
             detail, "", "| step | passed | checks | last analysis |", "|---|---|---|---|"]
    for step in history:
        checks = max((row["check"] for row in step["checks"]), default=0)
        last = [row for row in step["checks"] if row["check"] == checks]
        shown = ", ".join(f"{r['name']} {r['status']} ({r['value']})" for r in last) or "-"
        lines.append(f"| {step['step']} | {'yes' if step['passed'] else 'no'} | {checks} | {shown} |")
    return "\n".join(lines)
