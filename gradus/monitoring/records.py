"""The drift monitor's records, kept in the registry's store beside the versions they concern.

    monitor/triggers/<batch>.json   one claim per batch that started a retrain (create-only: a batch
                                    starts at most one retrain, concurrent monitor runs included)
    monitor/drift/<time>-<nonce>.json  every verdict, write-once; the service exposes the latest as
                                    metrics, so alerts need no extra component
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from gradus.registry.audit import now_utc
from gradus.registry.store import Store


class MonitorRecords:
    """Retrain claims and drift verdicts in one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def trigger(self, batch: str) -> dict[str, Any] | None:
        data = self.store.read(f"monitor/triggers/{batch}.json")
        return json.loads(data) if data is not None else None

    def triggers(self) -> list[dict[str, Any]]:
        return [json.loads(data) for key in self.store.keys("monitor/triggers/") if (data := self.store.read(key))]

    def claim_trigger(self, batch: str, record: dict[str, Any]) -> bool:
        """Claim a batch for one retrain; False if a monitor run already did (concurrent runs included)."""
        return self.store.create(f"monitor/triggers/{batch}.json",
                                 json.dumps({"at": now_utc(), **record}, sort_keys=True, default=str).encode())

    def release_trigger(self, batch: str) -> None:
        """Give a claim back when the retrain could not be started, so the next run may try again."""
        self.store.delete(f"monitor/triggers/{batch}.json")

    def record_drift(self, verdict: dict[str, Any]) -> None:
        """Keep one drift monitor verdict (write-once, named by time)."""
        stamp = now_utc().replace("-", "").replace(":", "")
        self.store.create(f"monitor/drift/{stamp}-{uuid.uuid4().hex[:8]}.json",
                          json.dumps(verdict, sort_keys=True, default=str).encode())

    def latest_drift(self) -> dict[str, Any] | None:
        keys = self.store.keys("monitor/drift/")
        data = self.store.read(keys[-1]) if keys else None
        return json.loads(data) if data else None
