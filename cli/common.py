"""Options and output helpers every `gradus` sub-command shares."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from gradus.config.pipeline import PARAMS_FILE
from gradus.errors import ConflictError, GradusError, IntegrityError

EXIT_BAD_REQUEST, EXIT_CONFLICT, EXIT_INTEGRITY = 2, 3, 4

SetOption = Annotated[list[str] | None, typer.Option(
    "--set", "-S", help="Override a parameter for this run, e.g. --set train.epochs=1 (repeatable).")]
ParamsOption = Annotated[Path, typer.Option("--params", help="The params file.")]
DEFAULT_PARAMS = Path(PARAMS_FILE)
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def fail(exc: Exception, code: int = EXIT_BAD_REQUEST, prefix: str = "error") -> typer.Exit:
    """Print one red line naming what is wrong and return the Exit to raise."""
    typer.secho(f"{prefix}: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=code)


def guarded(action: Callable[[], object]) -> None:
    """Run a command body, mapping gradus's errors to one line and a distinct exit code (no traceback)."""
    try:
        action()
    except ConflictError as exc:
        raise fail(exc, EXIT_CONFLICT, "conflict") from None
    except IntegrityError as exc:
        raise fail(exc, EXIT_INTEGRITY, "integrity") from None
    except GradusError as exc:
        raise fail(exc) from None


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain-text table, columns padded to their widest cell."""
    cells = [headers] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-" if value is None else str(value)
