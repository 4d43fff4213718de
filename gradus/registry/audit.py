"""The registry's audit log: one write-once object per change or refused change, read incrementally.

Events are never rewritten, so a reader keeps the ones it parsed and, on the next read, fetches only the
keys it has not seen (one LIST, then one GET per new event). An alias change or a model fetch therefore
costs the same whether the registry has ten events or ten thousand, where re-reading every event on every
check (one GET each) grew with the registry's history.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from gradus.registry.store import Store


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def actor() -> str:
    """Who made a change: the OS user and host (the run id says which pipeline run)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # containers without a passwd entry
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


class AuditLog:
    """Append events; read them all, oldest first, fetching only what appeared since the last read."""

    PREFIX = "audit/"

    def __init__(self, store: Store) -> None:
        self.store = store
        self._seen: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()  # the service reads from its event loop and its loader threads
        self.reads = 0  # objects fetched so far (the incremental reader's cost, checked by a test)

    def append(self, action: str, *, run: str, reason: str, outcome: str, version: str | None = None,
               details: dict[str, Any] | None = None) -> None:
        """Append one event (never rewritten: each is its own write-once object)."""
        at = now_utc()
        event = {"at": at, "action": action, "version": version, "run": run, "by": actor(), "reason": reason,
                 "outcome": outcome, "details": details or {}}
        stamp = at.replace("-", "").replace(":", "")
        self.store.create(f"{self.PREFIX}{stamp}-{uuid.uuid4().hex[:8]}.json",
                          json.dumps(event, sort_keys=True, default=str).encode())

    def events(self) -> list[dict[str, Any]]:
        """Every event, oldest first."""
        keys = self.store.keys(self.PREFIX)
        with self._lock:
            for key in keys:
                if key not in self._seen and (data := self.store.read(key)) is not None:
                    self.reads += 1
                    self._seen[key] = json.loads(data)
            listed = set(keys)  # a restored or pruned log: forget what is no longer there
            for key in [k for k in self._seen if k not in listed]:
                del self._seen[key]
            found = list(self._seen.values())
        return sorted(found, key=lambda e: e["at"])

    @staticmethod
    def registration(version: str, events: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The event that recorded a version's manifest digest, if any."""
        return next((e for e in events if e["action"] == "register" and e["version"] == version
                     and e["outcome"] == "ok" and e.get("details", {}).get("manifest_sha256")), None)
