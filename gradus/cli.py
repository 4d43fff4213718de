"""The `gradus` command: run the pipeline, one stage, or inspect parameters and demo data."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Annotated

import typer

from gradus.config import PARAMS_FILE, ConfigError, load_params
from gradus.errors import GradusError

app = typer.Typer(
    help="gradus: fine-tune a pretrained language model on validated, versioned data, step by step.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
params_app = typer.Typer(help="Inspect and check params.yaml.", no_args_is_help=True)
app.add_typer(params_app, name="params")

SetOption = Annotated[list[str] | None, typer.Option(
    "--set", "-S", help="Override a parameter for this run, e.g. --set train.epochs=1 (repeatable).")]
ParamsOption = Annotated[Path, typer.Option("--params", help="The params file.")]
STAGE_NAMES = ("ingest", "validate", "split", "train", "evaluate")


def _fail(exc: Exception) -> typer.Exit:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


@app.command()
def run(
    set_: SetOption = None,
    project_dir: Annotated[Path, typer.Option(help="Project root holding dvc.yaml and params.yaml.")] = Path("."),
    push: Annotated[bool, typer.Option(help="Push outputs to the DVC remote after the run.")] = True,
) -> None:
    """Run the whole training pipeline as a Prefect flow on a local, ephemeral Prefect (no server needed).

    Overrides are written into params.yaml first (as `dvc exp run -S` does) so DVC tracks them.
    """
    # The CLI is the one place in gradus/ that reaches the orchestration layer, and only lazily here:
    # importing gradus never imports Prefect.
    flows_training = importlib.import_module("flows.training")
    try:
        result = flows_training.training_pipeline(
            flows_training.TrainingOverrides(extra=set_ or []), str(project_dir), push)
    except (ConfigError, GradusError) as exc:
        raise _fail(exc) from None
    typer.echo(flows_training.format_result(result))


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(STAGE_NAMES)}.")],
    set_: SetOption = None,
    params: ParamsOption = Path(PARAMS_FILE),
) -> None:
    """Run one stage directly, without DVC's caching (dvc.yaml runs `python -m tasks STAGE`)."""
    if name not in STAGE_NAMES:
        raise _fail(ValueError(f"unknown stage {name!r}; choose one of {', '.join(STAGE_NAMES)}"))
    try:
        summary = importlib.import_module(f"tasks.{name}").run(load_params(params, set_ or []))
    except (ConfigError, GradusError) as exc:
        raise _fail(exc) from None
    typer.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))


@params_app.command("check")
def params_check(set_: SetOption = None, params: ParamsOption = Path(PARAMS_FILE)) -> None:
    """Validate params.yaml (and overrides); exit 2 naming each bad key."""
    try:
        load_params(params, set_ or [])
    except ConfigError as exc:
        raise _fail(exc) from None
    typer.echo(f"{params}: ok")


@params_app.command("show")
def params_show(set_: SetOption = None, params: ParamsOption = Path(PARAMS_FILE)) -> None:
    """Print the effective parameters (defaults filled in, overrides applied) as JSON."""
    try:
        typer.echo(json.dumps(load_params(params, set_ or []).as_dict(), indent=2))
    except ConfigError as exc:
        raise _fail(exc) from None


@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Argument(help="Where to write the CSV (text,label).")],
    rows: Annotated[int, typer.Option(min=100)] = 3000,
    seed: int = 7,
) -> None:
    """Write the embedded demo dataset to a CSV file (the same rows the demo source generates)."""
    from gradus.demo import generate

    out.parent.mkdir(parents=True, exist_ok=True)
    generate(rows, seed).to_csv(out, index=False)
    typer.echo(f"wrote {rows} rows to {out}")


@app.command()
def version() -> None:
    """Print the gradus version."""
    from gradus import __version__

    typer.echo(__version__)


if __name__ == "__main__":  # pragma: no cover
    app()
