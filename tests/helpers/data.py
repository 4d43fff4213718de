"""Helpers for data tests: params pointing every output into a temporary folder."""

from __future__ import annotations

from pathlib import Path

from gradus.config.loading import apply_overrides, read_params_file
from gradus.config.params import Params, validate_params
from tests.conftest import ROOT

OUTPUTS = {"raw": "raw.parquet", "raw_manifest": "manifest.json", "validated": "rows.parquet",
           "quarantine": "quarantine.jsonl", "validation_report": "validation.json", "flags": "flags.jsonl",
           "data_docs": "docs"}


def params_for(tmp_path: Path, sources: list[dict], **extra: object) -> Params:
    """The project's params with these sources, outputs under tmp_path, and dotted overrides."""
    overrides = [f"paths.{key}={tmp_path / value}" for key, value in OUTPUTS.items()]
    raw = apply_overrides(read_params_file(ROOT / "params.yaml"), overrides + [f"{k}={v}" for k, v in extra.items()])
    raw["data"]["sources"] = sources
    return validate_params(raw)
