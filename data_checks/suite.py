"""Great Expectations suite for labeled text, built in code from params, and its row-level results."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import great_expectations as gx
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig

from gradus.config import ValidateConfig

BLANK = r"^\s*$"


@dataclass(frozen=True)
class RowCheck:
    """One row-level expectation with the plain-English reason a failing row gets."""

    name: str
    expectation: gx.expectations.Expectation
    reason: str


@dataclass
class SuiteResult:
    """What the suite found: failing row positions per check, and the GX success flag per check."""

    failures: dict[str, list[int]] = field(default_factory=dict)
    passed: dict[str, bool] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)


def row_checks(cfg: ValidateConfig) -> list[RowCheck]:
    """The row-level checks for a (text, label) table, thresholds from params."""
    e = gx.expectations
    return [
        RowCheck("text_not_null", e.ExpectColumnValuesToNotBeNull(column="text"), "text is missing"),
        RowCheck("text_not_blank", e.ExpectColumnValuesToNotMatchRegex(column="text", regex=BLANK),
                 "text is empty or only whitespace"),
        RowCheck("text_length", e.ExpectColumnValueLengthsToBeBetween(
            column="text", min_value=cfg.min_text_chars, max_value=cfg.max_text_chars),
            f"text length is outside {cfg.min_text_chars}..{cfg.max_text_chars} characters"),
        RowCheck("label_not_null", e.ExpectColumnValuesToNotBeNull(column="label"), "label is missing"),
        RowCheck("label_not_blank", e.ExpectColumnValuesToNotMatchRegex(column="label", regex=BLANK),
                 "label is empty or only whitespace"),
    ]


def _context() -> gx.data_context.AbstractDataContext:
    # GX logs and draws progress bars per metric; a pipeline stage wants one summary line instead.
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def run_row_checks(frame: pd.DataFrame, checks: list[RowCheck], suite_name: str = "gradus_rows") -> SuiteResult:
    """Validate `frame` (RangeIndex) with GX and return the failing row positions of every check."""
    if not frame.index.equals(pd.RangeIndex(len(frame))):
        raise ValueError("run_row_checks needs a frame with a RangeIndex (call reset_index(drop=True))")
    context = _context()
    batch_definition = (
        context.data_sources.add_pandas("gradus")
        .add_dataframe_asset("rows")
        .add_batch_definition_whole_dataframe("all")
    )
    suite = context.suites.add(gx.ExpectationSuite(name=suite_name))
    for check in checks:
        suite.add_expectation(check.expectation)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    report = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    result = SuiteResult(reasons={c.name: c.reason for c in checks})
    for check, outcome in zip(checks, report.results, strict=True):
        result.failures[check.name] = [int(i) for i in outcome.result.get("unexpected_index_list") or []]
        result.passed[check.name] = bool(outcome.success)
    return result
