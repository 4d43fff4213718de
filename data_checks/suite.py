"""Great Expectations suite for labeled text, built in code from params, and its row-level results."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import great_expectations as gx
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig

from gradus.config.pipeline import StageParams, ValidateConfig
from gradus.io import SNAPSHOT_COLUMNS
from gradus.task_types.base import DEFAULT_TASK, RowRule, Targets
from gradus.task_types.seam import task_type
from gradus.text import (
    BLANK,
    CONTROL_OR_INVALID,
    REASONS,
    TEXT_CONTROL_CHARS,
    TEXT_LENGTH,
    TEXT_NOT_BLANK,
    length_reason,
)

SCHEMA = SNAPSHOT_COLUMNS


@dataclass(frozen=True)
class RowCheck:
    """One row-level expectation with the plain-English reason a failing row gets."""

    name: str
    expectation: gx.expectations.Expectation
    reason: str
    detail_column: str | None = None  # a column whose value, where set, follows the reason (the row's own words)


@dataclass
class SuiteResult:
    """What the suite found: failing row positions per row check, and table-level outcomes."""

    failures: dict[str, list[int]] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)  # check name -> its detail column
    schema_ok: bool = True
    schema_detail: str = ""
    docs_index: str | None = None


def expectation(rule: RowRule) -> gx.expectations.Expectation:
    """A task type's declared row rule as the expectation that checks it."""
    e = gx.expectations
    if rule.expect == "null":
        return e.ExpectColumnValuesToBeNull(column=rule.column)
    if rule.expect == "not_null":
        return e.ExpectColumnValuesToNotBeNull(column=rule.column)
    if rule.expect == "not_blank":
        return e.ExpectColumnValuesToNotMatchRegex(column=rule.column, regex=BLANK)
    if rule.expect == "in_set":
        return e.ExpectColumnValuesToBeInSet(column=rule.column, value_set=list(rule.values))
    raise ValueError(f"row rule {rule.name}: no expectation for {rule.expect!r}")


def default_label_rules(vocabulary: list[str]) -> list[RowRule]:
    """The default task type's rules on the label for an inferred `vocabulary` (benchmarks, tests of the suite)."""
    targets = Targets(columns={}, key=pd.Series(dtype=object), vocabulary=vocabulary, inferred=True)
    return task_type(DEFAULT_TASK).row_rules(StageParams(), targets)


def row_checks(cfg: ValidateConfig, target_rules: list[RowRule]) -> list[RowCheck]:
    """The row-level checks, thresholds from params: the text's, then the task type's on the target, then the
    shared ones on derived columns (data_checks.features, gradus.pii, label noise)."""
    e = gx.expectations
    checks = [
        # Ingest keeps a non-string value visible as JSON text and names its type in text_type/label_type.
        RowCheck("text_type", e.ExpectColumnValuesToBeNull(column="text_type"),
                 "text is not a string in the source (its JSON type is in text_type)"),
        RowCheck("text_not_null", e.ExpectColumnValuesToNotBeNull(column="text"), "text is missing"),
        RowCheck(TEXT_NOT_BLANK, e.ExpectColumnValuesToNotMatchRegex(column="text", regex=BLANK),
                 REASONS[TEXT_NOT_BLANK]),
        RowCheck(TEXT_LENGTH, e.ExpectColumnValueLengthsToBeBetween(
            column="text", min_value=cfg.min_text_chars, max_value=cfg.max_text_chars),
            length_reason(cfg.min_text_chars, cfg.max_text_chars)),
        RowCheck("text_tokens", e.ExpectColumnValuesToBeBetween(
            column="n_tokens", min_value=cfg.min_tokens, max_value=cfg.max_tokens),
            f"text is outside {cfg.min_tokens}..{cfg.max_tokens} tokens"),
        RowCheck(TEXT_CONTROL_CHARS, e.ExpectColumnValuesToNotMatchRegex(column="text", regex=CONTROL_OR_INVALID),
                 REASONS[TEXT_CONTROL_CHARS]),
        *(RowCheck(rule.name, expectation(rule), rule.reason, rule.detail_column) for rule in target_rules),
    ]
    if cfg.duplicates == "quarantine":
        checks.append(RowCheck("duplicate", e.ExpectColumnValuesToBeInSet(column="duplicate_of", value_set=[-1]),
                               "duplicate of an earlier row with the same normalised text and label"))
    if cfg.conflicts == "quarantine":
        checks.append(RowCheck("conflicting_labels", e.ExpectColumnValuesToBeInSet(
            column="conflicting_labels", value_set=[""]), "the same normalised text appears with other labels"))
    if cfg.pii.action == "quarantine":
        checks.append(RowCheck("pii", e.ExpectColumnValuesToBeInSet(column="pii", value_set=[""]),
                               "text contains personal data"))
    if cfg.label_noise.enabled and cfg.label_noise.quarantine:
        checks.append(RowCheck("label_noise", e.ExpectColumnValuesToBeInSet(column="noise_flag", value_set=[False]),
                               "label looks wrong: a model trained on the other rows is confident in another"))
    return checks


def _context(docs_dir: Path | None) -> gx.data_context.AbstractDataContext:
    # GX logs and draws progress bars per metric; a pipeline stage wants one summary line instead.
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    if docs_dir is not None:
        context.add_data_docs_site(site_name="gradus", site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
    return context


def run_suite(frame: pd.DataFrame, checks: list[RowCheck], docs_dir: Path | None = None,
              suite_name: str = "gradus_labeled_text") -> SuiteResult:
    """Validate `frame` (RangeIndex) in one GX checkpoint; optionally build Data Docs into docs_dir."""
    if not frame.index.equals(pd.RangeIndex(len(frame))):
        raise ValueError("run_suite needs a frame with a RangeIndex (call reset_index(drop=True))")
    context = _context(docs_dir)
    batch_definition = (context.data_sources.add_pandas("gradus").add_dataframe_asset("rows")
                        .add_batch_definition_whole_dataframe("all"))
    suite = context.suites.add(gx.ExpectationSuite(name=suite_name))
    schema = [suite.add_expectation(gx.expectations.ExpectTableColumnsToMatchSet(column_set=SCHEMA, exact_match=False)),
              suite.add_expectation(gx.expectations.ExpectColumnValuesToBeOfType(column="source_row", type_="int64"))]
    schema_ids = {expectation.id for expectation in schema}
    added = {suite.add_expectation(check.expectation).id: check for check in checks}
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite_name, data=batch_definition, suite=suite))
    actions = [gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["gradus"])] if docs_dir else []
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name=suite_name, validation_definitions=[definition], actions=actions,
        result_format={"result_format": "COMPLETE"}))
    outcome = next(iter(checkpoint.run(batch_parameters={"dataframe": frame}).run_results.values()))
    result = SuiteResult(reasons={c.name: c.reason for c in checks},
                         details={c.name: c.detail_column for c in checks if c.detail_column})
    # GX does not promise results in suite order: match each result to its expectation by id.
    for item in outcome.results:
        expectation_id = item.expectation_config.id
        if expectation_id in schema_ids:
            if not item.success:
                missing = sorted(set(SCHEMA) - set(frame.columns))
                dtype = frame["source_row"].dtype if "source_row" in frame else None
                detail = f"missing columns {missing}" if missing else f"source_row is {dtype}, not int64"
                result.schema_ok, result.schema_detail = False, detail
        else:
            positions = item.result.get("unexpected_index_list") or []
            result.failures[added[expectation_id].name] = [int(i) for i in positions]
    result.failures = {c.name: result.failures.get(c.name, []) for c in checks}  # suite order for reports
    if docs_dir is not None:
        result.docs_index = str(Path(docs_dir) / "index.html")
    return result
