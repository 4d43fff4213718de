"""Validate stage: Great Expectations checks on the raw snapshot; failing rows quarantined with reasons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from data_checks.quarantine import quarantine_rows
from data_checks.suite import row_checks, run_row_checks
from gradus.config import Params
from gradus.errors import DataError
from gradus.io import write_json, write_parquet


def validate_frame(raw: pd.DataFrame, params: Params) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Run the suite; return (kept, quarantined, report)."""
    checks = row_checks(params.validation)
    result = run_row_checks(raw.reset_index(drop=True), checks)
    kept, quarantined = quarantine_rows(raw.reset_index(drop=True), result)
    share = len(quarantined) / len(raw) if len(raw) else 0.0
    report = {
        "rows_in": len(raw),
        "rows_kept": len(kept),
        "rows_quarantined": len(quarantined),
        "quarantine_share": round(share, 6),
        "max_quarantine_share": params.validation.max_quarantine_share,
        # Numbers only: this file is a DVC metric (reasons live with each row in the quarantine file).
        "failed_rows": {name: len(rows) for name, rows in result.failures.items()},
        "success": share <= params.validation.max_quarantine_share and len(kept) > 0,
    }
    return kept, quarantined, report


def write_quarantine(quarantined: pd.DataFrame, path: Path) -> None:
    """One JSON object per quarantined row: the row, its source position, failed checks and reasons."""
    path.parent.mkdir(parents=True, exist_ok=True)
    records = quarantined.to_dict(orient="records")
    path.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records),
                    encoding="utf-8")


def run(params: Params) -> dict[str, Any]:
    """Write kept rows, the quarantine file and the validation report; fail if too much was quarantined."""
    raw = pd.read_parquet(params.paths.raw)
    kept, quarantined, report = validate_frame(raw, params)
    write_parquet(kept, Path(params.paths.validated))
    write_quarantine(quarantined, Path(params.paths.quarantine))
    write_json(report, Path(params.paths.validation_report))
    if not report["success"]:
        failing = ", ".join(f"{name}={n}" for name, n in report["failed_rows"].items() if n)
        raise DataError(
            f"validate: {report['rows_quarantined']} of {report['rows_in']} rows quarantined "
            f"({report['quarantine_share']:.1%} > validate.max_quarantine_share "
            f"{params.validation.max_quarantine_share:.1%}); failed checks: {failing or 'none'}. "
            f"See {params.paths.quarantine} for each row and its reason"
        )
    return {k: report[k] for k in ("rows_in", "rows_kept", "rows_quarantined")}
