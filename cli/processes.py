"""Local server processes (the demo's service, the test suite's and the benchmarks' servers): a free loopback
port, and a process started in its own session and waited for until its readiness URL answers."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from gradus.errors import GradusError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_until_ready(command: list[str], ready_url: str, log: Path, timeout: float = 120,
                      env: dict[str, str] | None = None, cwd: Path | None = None,
                      accept: tuple[int, ...] = (200,)) -> subprocess.Popen[bytes]:
    """Start a server process (its own session, so it can be signalled as a group; output to `log`) and wait
    until ready_url answers with a status in `accept`; an exit or the timeout is an error quoting its log."""
    import httpx

    log.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise GradusError(f"{command[0]} exited {process.returncode}: {log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(ready_url, timeout=1).status_code in accept:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise GradusError(f"{command[0]} not ready in {timeout:g} s: {log.read_text(errors='replace')[-3000:]}")
