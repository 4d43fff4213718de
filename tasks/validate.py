"""Validate stage: Great Expectations checks on the raw snapshot; failing rows quarantined with reasons."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from data_checks import features
from data_checks.label_noise import flag_rows
from data_checks.quarantine import quarantine_rows
from data_checks.suite import row_checks, run_suite
from gradus import pii
from gradus.config.pipeline import StageParams
from gradus.errors import DataError
from gradus.io import SNAPSHOT_COLUMNS as COLUMNS
from gradus.io import TYPE_COLUMNS, write_json, write_parquet
from gradus.task_types.base import Targets
from gradus.task_types.seam import task_type
from gradus.text import normalized

CONTEXT_COLUMNS = ["n_tokens", "duplicate_of", "conflicting_labels", "pii", "noise_flag", "suggested_label",
                   "label_probability"]


def tokenizer_counts(params: StageParams) -> features.Tokenize:
    """Token counts with the base model's own tokenizer (special tokens included), loaded lazily."""
    from gradus.modeling import token_counter

    return token_counter(params.model.base, params.model.revision)


def derive(raw: pd.DataFrame, params: StageParams, tokenize: features.Tokenize) -> tuple[pd.DataFrame, Targets]:
    """The frame the suite checks: raw columns plus derived ones (the task type's on the target among them);
    and what the task type read of the targets."""
    cfg, task = params.validation, task_type(params.model.task)
    frame = raw.reset_index(drop=True).copy()
    for column in TYPE_COLUMNS:  # snapshots written before types were recorded hold strings only
        if column not in frame:
            frame[column] = None
    targets = task.read_targets(frame, params)
    for column, values in targets.columns.items():
        frame[column] = values
    keys = normalized(frame["text"])
    frame["n_tokens"] = features.token_counts(frame["text"], cfg, tokenize)
    frame["duplicate_of"] = features.duplicate_of(keys, targets.key, frame["source_row"])
    frame["conflicting_labels"] = features.conflicting_labels(keys, targets.key)
    frame["pii"] = pii.pii_column(frame["text"], cfg.pii.kinds) if cfg.pii.action != "off" else ""
    frame["noise_flag"], frame["suggested_label"], frame["label_probability"] = False, "", pd.NA
    usable = frame["text"].fillna("").str.strip().astype(bool) & targets.key.notna()
    flags = (flag_rows(task.target_form, frame["text"], frame[task.target_column], usable, targets.vocabulary,
                       cfg.label_noise) if cfg.label_noise.enabled else None)
    if flags is not None:
        for column in flags.columns:
            frame.loc[flags.index, column] = flags[column]
    return frame, targets


def dataset_failures(kept: pd.DataFrame, params: StageParams, share: float, schema: str) -> list[str]:
    """Checks on the whole batch (the share quarantined; the task type's on its labels); each failure is one
    sentence with its numbers."""
    cfg = params.validation
    failures = [f"schema: {schema}"] if schema else []
    if share > cfg.max_quarantine_share:
        failures.append(f"quarantined share {share:.1%} > validate.max_quarantine_share "
                        f"{cfg.max_quarantine_share:.1%}")
    failures += task_type(params.model.task).batch_failures(kept, params) if not kept.empty else []
    if kept.empty:
        failures.append("no rows left after quarantine")
    return failures


def validate_frame(raw: pd.DataFrame, params: StageParams, docs_dir: Path | None = None,
                   tokenize: features.Tokenize | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Run the suite; return (kept rows, quarantined rows with reasons and context, report)."""
    cfg = params.validation
    frame, targets = derive(raw, params, tokenize or tokenizer_counts(params))
    checks = row_checks(cfg, task_type(params.model.task).row_rules(params, targets))
    result = run_suite(frame, checks, docs_dir)
    kept, quarantined = quarantine_rows(frame, result)
    share = len(quarantined) / len(frame) if len(frame) else 0.0
    failures = dataset_failures(kept, params, share, result.schema_detail)
    if cfg.pii.action == "mask":
        masked = kept["pii"] != ""
        kept.loc[masked, "text"] = kept.loc[masked, "text"].map(lambda t: pii.mask_pii(t, cfg.pii.kinds))
    report = {
        "rows_in": len(frame), "rows_kept": len(kept), "rows_quarantined": len(quarantined),
        "quarantine_share": round(share, 6),
        # Numbers only: this file is a DVC metric (reasons live with each row in the quarantine file).
        "failed_rows": {name: len(rows) for name, rows in result.failures.items()},
        # Flags on kept rows are what reports/flags.jsonl holds; rows that were flagged and also failed a
        # check left with the quarantine (their flags ride along there), counted apart so both add up.
        "flagged_rows": flag_counts(kept),
        "flagged_quarantined_rows": flag_counts(quarantined),
        "classes": len(task_type(params.model.task).frequencies(kept[targets_column(params)])),
        **targets.counts,
        "dataset_checks_failed": len(failures),
        "success": not failures,
    }
    return kept, quarantined, {**report, "failures": failures, "docs": result.docs_index,
                               "target_columns": list(targets.columns)}


def targets_column(params: StageParams) -> str:
    """The column of the validated rows that holds the targets in the task type's internal form."""
    return task_type(params.model.task).target_column


def flag_counts(rows: pd.DataFrame) -> dict[str, int]:
    """Rows flagged for personal data and for a likely wrong label."""
    return {"pii": int((rows["pii"] != "").sum()), "label_noise": int(rows["noise_flag"].astype(bool).sum())}


def write_rows(frame: pd.DataFrame, path: Path) -> None:
    """One JSON object per row (quarantine and flag files are read by people: keep them plain)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    path.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records),
                    encoding="utf-8")


def run(params: StageParams) -> dict[str, Any]:
    """Write kept rows, quarantine and flag files, the report and Data Docs; fail on a bad batch."""
    paths = params.paths
    docs = Path(paths.data_docs)
    shutil.rmtree(docs, ignore_errors=True)
    raw = pd.read_parquet(paths.raw)
    # Metadata columns ride along; the type columns are context for quarantined rows only.
    target = targets_column(params)
    columns = [*COLUMNS, *([target] if target not in COLUMNS else []),
               *(c for c in raw.columns if c not in COLUMNS and c not in TYPE_COLUMNS)]
    kept, quarantined, report = validate_frame(raw, params, docs)
    write_parquet(kept[columns], Path(paths.validated))
    context = [c for c in report.pop("target_columns") if c not in columns]
    write_rows(quarantined[[*columns, "failed_checks", "reasons", *TYPE_COLUMNS, *context, *CONTEXT_COLUMNS]],
               Path(paths.quarantine))
    flagged = kept[(kept["pii"] != "") | kept["noise_flag"].astype(bool)]
    write_rows(flagged[[*COLUMNS, "pii", "noise_flag", "suggested_label", "label_probability"]], Path(paths.flags))
    failures, docs_index = report.pop("failures"), report.pop("docs")
    write_json(report, Path(paths.validation_report))
    print(f"validate: Data Docs at {docs_index}")
    if failures:
        raise DataError(
            f"validate: batch rejected: {'; '.join(failures)}. {report['rows_quarantined']} of {report['rows_in']} "
            f"rows quarantined ({_top_checks(report)}); see {paths.quarantine} and the Data Docs at {docs_index}")
    return {k: report[k] for k in ("rows_in", "rows_kept", "rows_quarantined", "flagged_rows")}


def _top_checks(report: dict[str, Any]) -> str:
    failing = sorted(((n, c) for n, c in report["failed_rows"].items() if c), key=lambda x: -x[1])
    return ", ".join(f"{name}={count}" for name, count in failing) or "no row failed"
