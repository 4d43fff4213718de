"""Running the DVC pipeline from Python: `dvc repro` of one stage, any dvc command, with its output streamed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gradus.errors import GradusError

_RAN = re.compile(r"Running stage '([^']+)'")
_ERROR = re.compile(r"(gradus \w+: error: .*|ERROR: .*)")
_PROGRESS = re.compile(r"\d+%\|")
_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
PROGRESS_EVERY_S = 15.0


class StageFailed(GradusError):
    """A DVC stage exited non-zero; the message carries the stage's own error line."""


@dataclass(frozen=True)
class StageOutcome:
    stage: str
    ran: bool
    seconds: float


def dvc_env() -> dict[str, str]:
    """Environment for DVC subprocesses: this interpreter's bin first, so stage `python` is ours."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def run_dvc(args: list[str], project_dir: Path, log: Callable[[str], None],
            env: dict[str, str] | None = None) -> list[str]:
    """Run `dvc ARGS` in project_dir (with `env` added to the environment), passing each output line to log;
    raise StageFailed on error."""
    command = [sys.executable, "-m", "dvc", *args]
    process = subprocess.Popen(command, cwd=project_dir, env=dvc_env() | (env or {}), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    last_progress = 0.0
    assert process.stdout is not None
    for raw in process.stdout:
        line = _TERMINAL_CODES.sub("", raw).rstrip()
        if not line:
            continue
        lines.append(line)
        # Progress bars redraw many times a second; a log (Prefect's UI) wants one line now and then.
        if _PROGRESS.search(line):
            if time.monotonic() - last_progress < PROGRESS_EVERY_S and "100%|" not in line:
                continue
            last_progress = time.monotonic()
        log(line)
    if process.wait() != 0:
        errors = [m.group(1) for line in lines if (m := _ERROR.search(line))]
        detail = errors[0] if errors else (lines[-1] if lines else "no output")
        raise StageFailed(f"`dvc {' '.join(args)}` failed (exit {process.returncode}): {detail}")
    return lines


def repro_stage(stage: str, project_dir: Path, log: Callable[[str], None] = print, force: bool = False) -> StageOutcome:
    """Reproduce one stage if DVC finds it changed (its own up-to-date check), else skip it; `force` reruns it."""
    started = time.perf_counter()
    lines = run_dvc(["repro", "--single-item", *(["--force"] if force else []), stage], project_dir, log)
    ran = any(m.group(1) == stage for line in lines if (m := _RAN.search(line)))
    return StageOutcome(stage, ran, round(time.perf_counter() - started, 2))
