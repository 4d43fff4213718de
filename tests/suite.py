"""`make test`: the whole suite as two pytest processes side by side, then the timing-bound tests alone.

    python -m tests.suite              # what `make test` runs
    python -m tests.suite ARGS...      # any pytest arguments: one plain pytest process, as `pytest ARGS`

Why two processes: run serially, the suite keeps 1.07 of the 2 cores busy on average (measured under .ci/run:
user+sys 2,156 s over 2,018 s); most of its time waits on subprocesses starting (every DVC stage is a Python start
importing torch), servers starting and services answering. pytest-xdist was tried and dropped: a worker hung in the
Prefect test harness's teardown. Two plain pytest processes share nothing but the machine (each its own temporary
folder; every server a test starts takes a free port). Tests marked `timing` measure latency or batching, or depend
on the moment of a kill; they run after both, alone, as they would in a serial run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The flow tests and the search (whole pipelines through Prefect servers) in one process, everything else in the
# other, the run-isolation test among the rest: with the task-type lifecycles the flows' process took 957 s against
# the rest's 821 s (2026-12-07, 2 cores); the isolation test's 70 s evens them.
BESIDE_THE_FLOWS = "tests/flows/test_run_isolation.py"
GROUPS = {"flows": [*(str(path.relative_to(ROOT)) for path in sorted((ROOT / "tests" / "flows").glob("test_*.py"))
                      if str(path.relative_to(ROOT)) != BESIDE_THE_FLOWS), "tests/pipeline/test_tune.py"]}
NO_TESTS = 5  # pytest's exit code when a selection is empty


def pytest_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", *args]


def stream(name: str, process: subprocess.Popen[str]) -> None:
    """Each line of a process's output as it comes, prefixed with its group."""
    assert process.stdout is not None
    for line in process.stdout:
        sys.stdout.write(f"[{name}] {line}")
        sys.stdout.flush()


def run_side_by_side(commands: dict[str, list[str]]) -> dict[str, int]:
    processes = {name: subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, bufsize=1)
                 for name, command in commands.items()}
    readers = [threading.Thread(target=stream, args=(name, process)) for name, process in processes.items()]
    for reader in readers:
        reader.start()
    codes = {name: process.wait() for name, process in processes.items()}
    for reader in readers:
        reader.join()
    return codes


def main(argv: list[str]) -> int:
    if argv:
        return subprocess.call(pytest_command(*argv), cwd=ROOT)
    started = time.monotonic()
    grouped = [path for paths in GROUPS.values() for path in paths]
    with tempfile.TemporaryDirectory(prefix="gradus-tests-") as scratch:
        commands = {name: pytest_command(*paths, "-m", "not timing", "--basetemp", os.path.join(scratch, name))
                    for name, paths in GROUPS.items()}
        commands["rest"] = pytest_command("tests", *(f"--ignore={path}" for path in grouped), "-m", "not timing",
                                          "--basetemp", os.path.join(scratch, "rest"))
        codes = run_side_by_side(commands)
        side_by_side = time.monotonic() - started
        print(f"\nsuite: the side-by-side part took {side_by_side:.0f} s; now the tests marked timing, alone",
              flush=True)
        codes["timing"] = subprocess.call(pytest_command("tests", "-m", "timing", "--basetemp",
                                                         os.path.join(scratch, "timing")), cwd=ROOT)
    failed = {name: code for name, code in codes.items() if code not in (0, NO_TESTS)}
    print(f"\nsuite: {time.monotonic() - started:.0f} s in all; "
          + (f"FAILED in {', '.join(f'{name} (exit {code})' for name, code in failed.items())}" if failed
             else "every part passed"), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
