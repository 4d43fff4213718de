"""Dynamic batching: requests wait in a bounded queue; one worker thread per served model cuts a batch at
max_batch_size texts or max_wait_ms, whichever comes first, and answers every request of the batch.

Written by hand because what exists does not fit: Triton and TorchServe batch in a server of their own (a
second process to ship and watch), and the batching helpers of FastAPI-side libraries either hold a whole
batch to the size limit or give no backpressure. This is ~100 lines with a bounded queue and one thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradus.modeling import Classifier

log = logging.getLogger("gradus.serving")
# Fault injection for tests and demos (as GRADUS_FAILPOINT is for the registry): extra latency per batch,
# "250" for every version or "v1234abcd5678=250,v...=40" per version. Unset, as everywhere else, nothing.
FAULT_DELAY_ENV = "GRADUS_FAULT_DELAY_MS"
# ... and failures: while the file this names exists, every batch fails (the alerting tests switch it).
FAULT_ERROR_ENV = "GRADUS_FAULT_ERROR_FILE"


def fault_delays() -> dict[str, float]:
    """Seconds of injected latency per version ('*' for all) from GRADUS_FAULT_DELAY_MS."""
    spec = os.environ.get(FAULT_DELAY_ENV, "").strip()
    if not spec:
        return {}
    if "=" not in spec:
        return {"*": float(spec) / 1000}
    return {version.strip(): float(ms) / 1000 for version, ms in (part.split("=", 1) for part in spec.split(","))}


@dataclass
class Job:
    """One request's texts, and where its answer goes (a future of the request's event loop)."""

    texts: list[str]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    abandoned: bool = False  # set when the client left: the worker skips the job
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class Answer:
    """What the worker computed for one job: probabilities per text, and which model computed them."""

    probabilities: np.ndarray
    model: Classifier


class Slot:
    """One served alias (champion, canary): the model it answers with, swapped by reference, and its worker.

    The worker reads `model` once per batch, so a swap never mixes versions in a batch, and a batch in flight
    finishes on the model it started with.
    """

    _STOP = object()

    def __init__(self, alias: str, model: Classifier, *, max_batch_size: int, max_wait_ms: float,
                 queue_size: int, metrics: Any) -> None:
        self.alias, self.model = alias, model
        self.max_batch_size, self.max_wait = max_batch_size, max_wait_ms / 1000.0
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self.metrics = metrics
        self.closed = False
        self.delays = fault_delays()
        self.error_file = os.environ.get(FAULT_ERROR_ENV) or None
        self._gate = threading.Lock()  # orders submit against stop: nothing is queued behind the stop marker
        self.thread = threading.Thread(target=self._run, name=f"gradus-infer-{alias}", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> bool | None:
        """Queue a job; False at once when the queue is full (the caller answers 503), None when the slot
        was closed meanwhile (the caller routes again)."""
        with self._gate:
            if self.closed:
                return None
            try:
                self.queue.put_nowait(job)
            except queue.Full:
                self.metrics.rejected.labels(self.alias).inc()
                return False
        self.metrics.queue_depth.labels(self.alias).set(self.queue.qsize())
        return True

    def stop(self, timeout: float = 30.0) -> None:
        """Take no more jobs, answer what is queued, then end the worker."""
        with self._gate:
            self.closed = True
        self.queue.put(self._STOP)  # blocks while the queue is full: the worker is draining it
        self.thread.join(timeout)

    def _collect(self, first: Job) -> tuple[list[Job], bool]:
        """The first job plus whatever arrives within max_wait, up to max_batch_size texts."""
        batch, texts, stop = [first], len(first.texts), False
        deadline = time.perf_counter() + self.max_wait
        while texts < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            try:
                job = self.queue.get(timeout=remaining) if remaining > 0 else self.queue.get_nowait()
            except queue.Empty:
                break
            if job is self._STOP:
                stop = True
                break
            batch.append(job)
            texts += len(job.texts)
        return batch, stop

    def _run(self) -> None:
        while True:
            first = self.queue.get()
            if first is self._STOP:
                return
            batch, stop = self._collect(first)
            self.metrics.queue_depth.labels(self.alias).set(self.queue.qsize())
            self._answer(batch)
            if stop:
                return

    def _answer(self, batch: list[Job]) -> None:
        live = [job for job in batch if not job.abandoned]
        for _ in range(len(batch) - len(live)):
            self.metrics.abandoned.labels(self.alias).inc()
        if not live:
            return
        model = self.model  # read once: the whole batch is answered by one version
        texts = [text for job in live for text in job.texts]
        if delay := self.delays.get(model.version or "", self.delays.get("*", 0.0)):
            time.sleep(delay)
        try:
            if self.error_file and os.path.exists(self.error_file):
                raise RuntimeError(f"injected fault ({FAULT_ERROR_ENV})")
            probabilities = model.predict(texts, batch_size=max(len(texts), 1)).probabilities
        except Exception as exc:  # a model failure fails these requests (500), never the worker
            log.exception("inference failed on %s %s", self.alias, model.version)
            for job in live:
                job.loop.call_soon_threadsafe(_settle, job.future, exc, None)
            return
        self.metrics.batch_size.labels(self.alias, model.version or "-").observe(len(texts))
        start = 0
        for job in live:
            answer = Answer(probabilities[start : start + len(job.texts)], model)
            start += len(job.texts)
            job.loop.call_soon_threadsafe(_settle, job.future, None, answer)


def _settle(future: asyncio.Future[Any], error: Exception | None, answer: Answer | None) -> None:
    if future.done():  # the request gave up (timeout, client gone) meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(answer)
