"""Which versions the service answers with: the registry's champion and canary (with its weight), followed by
polling the alias generation, loaded and warmed off the request path, swapped in by reference (hot swap)."""

from __future__ import annotations

import dataclasses
import functools
import gc
import hashlib
import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gradus.config.operations import ServingConfig
from gradus.ensemble import build_ensemble, ensemble_id
from gradus.errors import GradusError
from gradus.modeling import Classifier
from gradus.monitoring.records import MonitorRecords
from gradus.registry.versions import Registry
from gradus.servable import load_version
from gradus.task_types.seam import DEFAULT_TASK
from serving.batching import Slot, service_lanes

log = logging.getLogger("gradus.serving")
WARM_TEXTS = ["where is my card", "I want to close my account and get a refund of the remaining balance"]


def sticky_share(key: str) -> float:
    """A stable number in [0, 1) for a routing key (blake2b: the same in every process, unlike hash())."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class Route:
    """The slot a request goes to."""

    slot: Slot
    alias: str


def settle_heap() -> None:
    """Collect once, then move every object alive now (the libraries, the loaded models) out of the cyclic
    garbage collector's reach (gc.freeze). Without it each full collection walks the few million objects
    torch and transformers create, holding the GIL for 100-300 ms: at 270 req/s on 2 cores that was the whole
    p99 (211 ms, against 84 ms with the collector off). Called at start and whenever the served versions
    change, after an unfreeze, so a swapped-out model's cycles are still collected."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class ModelSet:
    """The served slots and the canary weight, kept in step with the registry's aliases."""

    def __init__(self, registry: Registry, cfg: ServingConfig, device: str, metrics: Any) -> None:
        self.registry, self.cfg, self.device, self.metrics = registry, cfg, device, metrics
        self.lanes = service_lanes(cfg.lanes, device)
        self.slots: dict[str, Slot] = {}
        self.canary_weight = 0.0
        self.generation = -1
        self.refused: dict[str, str] = {}  # version -> why it was not loaded (not retried until forced)
        self._ensembles: dict[str, tuple[list[str], list[float]]] = {}  # serving.ensemble key -> members
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # -- routing

    @property
    def shadow(self) -> Slot | None:
        """The slot that gets a copy of live traffic, if a shadow version is set."""
        return self.slots.get("shadow")

    def route(self, key: str | None) -> Route:
        """Canary by weight: sticky for a key (raising the weight keeps keys already on the canary), random
        without one; champion otherwise."""
        canary, weight = self.slots.get("canary"), self.canary_weight
        if canary is not None and weight > 0:
            share = sticky_share(key) if key is not None else random.random()
            if share < weight:
                return Route(canary, "canary")
        return Route(self.slots["champion"], "champion")

    @property
    def ready(self) -> bool:
        return "champion" in self.slots

    def labels(self) -> set[str]:
        return {label for slot in list(self.slots.values()) for label in slot.model.labels}

    def task(self) -> str:
        """The task type the served models answer (release and the gate keep one per registry): the champion's."""
        slots = list(self.slots.values())
        return getattr(slots[0].model, "task", DEFAULT_TASK) if slots else DEFAULT_TASK

    # -- hot swap

    def refresh(self, force: bool = False) -> dict[str, Any]:
        """Bring the slots in line with the registry's aliases; a version that fails to load or verify is
        refused (the old one keeps serving) and not tried again until `force` (POST /admin/reload)."""
        with self._lock:
            state = self.registry.aliases()
            if state.generation == self.generation and not force:
                return self.describe()
            if force:
                self.refused.clear()
            canary = state.canary or {}
            wanted = {"champion": self._ensemble() if self.cfg.ensemble else state.champion,
                      "canary": canary.get("version") if canary.get("weight", 0) > 0 else None,
                      "shadow": state.shadow}
            served = self._versions()
            for alias, version in wanted.items():
                self._follow(alias, version)
            self.canary_weight = float(canary.get("weight", 0.0)) if "canary" in self.slots else 0.0
            if self._versions() != served:  # models loaded or let go
                settle_heap()
            self.generation = state.generation
            self.metrics.generation.set(state.generation)
            self._publish_info()
            return self.describe()

    def _versions(self) -> set[str | None]:
        return {slot.model.version for slot in self.slots.values()}

    def _follow(self, alias: str, version: str | None) -> None:
        current = self.slots.get(alias)
        if version is None:
            if alias != "champion" and current is not None:
                del self.slots[alias]  # new requests stop coming; the queue drains, then the worker ends
                current.stop()
            return
        if current is not None and current.model.version == version:
            return
        if version in self.refused:
            return
        # During a release the shadow and the canary are the same version: one loaded copy serves both.
        loaded = next((slot.model for slot in self.slots.values() if slot.model.version == version), None)
        model = dataclasses.replace(loaded, alias=alias) if loaded is not None else self._load(alias, version)
        if model is None:
            return
        if current is None:
            self.slots[alias] = Slot(alias, model, max_batch_size=self.cfg.max_batch_size,
                                     max_wait_ms=self.cfg.max_wait_ms, queue_size=self.cfg.queue_size,
                                     metrics=self.metrics, lanes=self.lanes)
        else:
            current.model = model  # the swap: one reference; the worker picks it up at its next batch
        log.info("serving %s as %s (backend %s)", version, alias, model.backend)

    def _ensemble(self) -> str | None:
        """serving.ensemble's members resolved to versions now (an alias among them may have moved): the
        champion route's key, under which _load builds the ensemble. A member that does not resolve keeps
        what is served (nothing, at start: not ready), and last_error says why."""
        try:
            versions = [self.registry.resolve(member.model) for member in self.cfg.ensemble]
        except GradusError as exc:
            self.last_error = f"serving.ensemble: {exc}"
            log.error("%s", self.last_error)
            current = self.slots.get("champion")
            return current.model.version if current is not None else None
        weights = [member.weight for member in self.cfg.ensemble]
        key = ensemble_id(versions, weights)
        self._ensembles[key] = (versions, weights)
        return key

    def _load_version(self, version: str) -> Any:
        load = functools.partial(load_version, self.registry, device=self.device, backend=self.cfg.backend,
                                 batch_size=self.cfg.max_batch_size,
                                 bf16=False if self.cfg.precision == "fp32" else None)
        if version in self._ensembles:
            versions, weights = self._ensembles[version]
            return build_ensemble([load(v) for v in versions], weights, version=version)
        return load(version)

    def _load(self, alias: str, version: str) -> Classifier | None:
        started = time.perf_counter()
        try:
            model = self._load_version(version)
            for _ in range(2):  # warm: first calls allocate and pick kernels
                model.predict(WARM_TEXTS * (self.cfg.max_batch_size // 2 or 1), batch_size=self.cfg.max_batch_size)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            self.refused[version] = reason
            self.last_error = f"{version} ({alias}) refused: {reason}"
            self.metrics.load_failures.labels(version, alias).inc()
            log.error("not serving %s as %s: %s", version, alias, reason)
            return None
        self.metrics.load_seconds.labels(version).observe(time.perf_counter() - started)
        return dataclasses.replace(model, alias=alias)

    def _publish_info(self) -> None:
        self.metrics.model_info.clear()
        for alias, slot in self.slots.items():
            weight = {"canary": self.canary_weight, "shadow": 0.0}.get(alias, 1.0 - self.canary_weight)
            self.metrics.model_info.labels(alias, slot.model.version or "-", f"{weight:g}", slot.model.backend).set(1)

    def describe(self) -> dict[str, Any]:
        return {"generation": self.generation, "canary_weight": self.canary_weight,
                "slots": {alias: slot.model.version for alias, slot in self.slots.items()},
                "refused": dict(self.refused), "last_error": self.last_error}

    def publish_drift(self) -> None:
        """The drift monitor's latest verdict (kept in the registry) as gauges: Prometheus alerts on drift by
        scraping the service it already scrapes; no Pushgateway to run."""
        verdict = MonitorRecords(self.registry.store).latest_drift()
        if verdict is None:
            return
        self.metrics.drift_detected.set(1 if verdict.get("drifted_signals") else 0)
        for signal, drifted in verdict.get("signals", {}).items():
            self.metrics.drift_signals.labels(signal).set(1 if drifted else 0)
        at = datetime.fromisoformat(str(verdict["at"]).replace("Z", "+00:00"))
        self.metrics.drift_last_run.set(at.timestamp())

    def start_polling(self) -> None:
        def poll() -> None:
            while not self._stop.wait(self.cfg.poll_interval_s):
                try:
                    self.refresh()
                    self.publish_drift()
                except Exception as exc:  # a registry hiccup must not end the poller
                    self.last_error = f"alias poll failed: {type(exc).__name__}: {exc}"
                    log.error("%s", self.last_error)

        self._poller = threading.Thread(target=poll, name="gradus-alias-poll", daemon=True)
        self._poller.start()

    def stop(self) -> None:
        """Stop polling, then let every worker answer what it has queued."""
        self._stop.set()
        for slot in list(self.slots.values()):
            slot.stop()
