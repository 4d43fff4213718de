"""The one stage runner: `python -m tasks STAGE` (what dvc.yaml calls) and `gradus stage STAGE` both use it."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from gradus.config.loading import load_stage_params
from gradus.errors import ConfigError
from gradus.stages import STAGES


def run_stage(name: str, params_file: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Load and validate params (with overrides), then run one stage; returns the stage's summary.

    The stage module is imported by name so that a light stage (ingest) does not pay for a heavy one's
    imports (torch, scikit-learn); STAGES bounds the names.
    """
    if name not in STAGES:
        raise ConfigError(f"unknown stage {name!r}; choose one of {', '.join(STAGES)}")
    params = load_stage_params(params_file, overrides)
    return importlib.import_module(f"tasks.{name}").run(params)
