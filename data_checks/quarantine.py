"""Row-level quarantine: failing rows leave the dataset with every check they failed and why."""

from __future__ import annotations

from collections import defaultdict

import pandas as pd

from data_checks.suite import SuiteResult


class QuarantineInvariantError(AssertionError):
    """rows in != rows kept + rows quarantined: a bug, never a data problem."""


def quarantine_rows(frame: pd.DataFrame, result: SuiteResult) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split frame into (kept, quarantined); quarantined rows gain `failed_checks` and `reasons`."""
    failed: dict[int, list[str]] = defaultdict(list)
    for name, positions in result.failures.items():
        for position in positions:
            failed[position].append(name)
    bad = sorted(failed)
    mask = pd.Series(False, index=frame.index)
    mask.iloc[bad] = True
    kept = frame.loc[~mask].reset_index(drop=True)
    quarantined = frame.loc[mask].copy()
    # Checks stay in suite order (failures is filled in that order), so reasons read most basic first.
    quarantined["failed_checks"] = [failed[p] for p in bad]
    quarantined["reasons"] = ["; ".join(_reason(frame, result, n, p) for n in failed[p]) for p in bad]
    quarantined = quarantined.reset_index(drop=True)
    check_row_counts(len(frame), len(kept), len(quarantined))
    return kept, quarantined


def _reason(frame: pd.DataFrame, result: SuiteResult, check: str, position: int) -> str:
    """A check's reason, followed by the row's own detail where the check names a detail column."""
    column = result.details.get(check)
    detail = frame[column].iloc[position] if column else None
    return f"{result.reasons[check]}: {detail}" if isinstance(detail, str) and detail else result.reasons[check]


def check_row_counts(rows_in: int, kept: int, quarantined: int) -> None:
    """Enforce rows in = rows kept + rows quarantined."""
    if rows_in != kept + quarantined:
        raise QuarantineInvariantError(f"rows in {rows_in} != kept {kept} + quarantined {quarantined}")
