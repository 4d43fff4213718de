"""`Params`: the whole of params.yaml, and `load_params`, which every gradus command, flow and the service
call first (an unknown key or a wrong type anywhere in the file is a clear error at start)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from gradus.config.loading import apply_overrides, read_params_file, validate
from gradus.config.operations import DriftConfig, ReleaseConfig, RunsConfig, ServingConfig, TuneConfig
from gradus.config.pipeline import PARAMS_FILE, StageParams


class Params(StageParams):
    """The whole of params.yaml: the stages' sections and the operations' ones."""

    drift: DriftConfig = DriftConfig()
    serving: ServingConfig = ServingConfig()
    release: ReleaseConfig = ReleaseConfig()
    tune: TuneConfig = TuneConfig()
    runs: RunsConfig = RunsConfig()

    # As the stages' model, but the whole file: an unknown top-level section is an error here.
    model_config = ConfigDict(**{**StageParams.model_config, "extra": "forbid"})


def validate_params(raw: dict, origin: str = PARAMS_FILE) -> Params:
    """Validate the whole of a params dict."""
    return validate(Params, raw, origin)


def load_params(path: str | Path = PARAMS_FILE, overrides: list[str] | tuple[str, ...] = ()) -> Params:
    """Load params.yaml, apply dotted overrides, validate everything."""
    return validate_params(apply_overrides(read_params_file(path), overrides), str(path))


def optional_override(section: type[BaseModel], name: str, prefix: str) -> Any:
    """The type of <prefix>.<name> with its bounds, as an optional override: one definition (the section), so a
    form in the Prefect UI can never accept what params.yaml would refuse."""
    info = section.model_fields[name]
    bounded = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
    return Annotated[bounded | None, Field(description=f"{prefix}.{name}")]
