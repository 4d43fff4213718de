"""Dynamic batching: requests wait in a bounded queue; one worker thread per served model cuts a batch and
hands it to one of `lanes` threads that run forward passes side by side (each on its share of the cores) and
answer every request of the batch.

A batch starts only when a lane is free: at once when no other lane is running, beside a running one only
once max_batch_size / 4 texts wait (at light load one lane answers everything, so passes stay large and
nothing competes with the event loop for the cores). It is cut at max_batch_size texts, at max_wait_ms after
its first text, or at its share of the work in the slot (queued texts plus those in running passes, divided
among the lanes that will be running), whichever comes first. The share keeps the lanes even: a free lane
that took the whole backlog would leave the others idle until its answers came back and new requests
arrived. A lone request on an idle slot never waits.

Lanes, not more intra-op threads, because on a CPU a small encoder's forward pass scales badly across cores:
MiniLM at batch 32 on 2 cores ran 485 texts/s with one pass on 2 torch threads and 760 texts/s with two passes
at once on one thread each (benchmarks/serve_throughput.py measures both).

Written by hand because what exists does not fit: Triton and TorchServe batch in a server of their own (a
second process to ship and watch), and the batching helpers of FastAPI-side libraries either hold a whole
batch to the size limit or give no backpressure. This is ~150 lines with a bounded queue and a thread pool.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradus.modeling import Classifier
from gradus.task_types.seam import DEFAULT_TASK, task_type

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


def service_lanes(configured: int, device: str) -> int:
    """Lanes per served model: as configured, else one on a GPU (it runs passes one after another anyway)
    and on a CPU two where there are two cores or more (measured on 2 cores: benchmarks/serve_throughput.py)."""
    return configured or (1 if device != "cpu" else min(2, os.cpu_count() or 1))


def service_threads(configured: int, lanes: int) -> int:
    """Torch threads per lane: as configured, else the cores shared among the lanes."""
    return configured or max(1, (os.cpu_count() or 1) // lanes)


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
    """What a lane computed for one job: probabilities per text, the label indices by falling probability
    (sorted once per batch in the lane, not per request on the event loop), and which model computed them."""

    probabilities: np.ndarray
    ranked: np.ndarray
    model: Classifier


class Slot:
    """One served alias (champion, canary): the model it answers with, swapped by reference, its worker and
    its lanes.

    Each batch reads `model` once, so a swap never mixes versions in a batch, and a batch in flight finishes on
    the model it started with.
    """

    _STOP = object()

    def __init__(self, alias: str, model: Classifier, *, max_batch_size: int, max_wait_ms: float,
                 queue_size: int, metrics: Any, lanes: int = 1) -> None:
        self.alias, self.model = alias, model
        self.max_batch_size, self.max_wait = max_batch_size, max_wait_ms / 1000.0
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self.metrics = metrics
        self.closed = False
        self.delays = fault_delays()
        self.error_file = os.environ.get(FAULT_ERROR_ENV) or None
        self._free = threading.BoundedSemaphore(lanes)  # lanes not running a batch
        self.spill = max(1, max_batch_size // 4)  # queued texts that start a batch beside a running one
        # Guards `closed` and the three counts below; orders submit against stop, so nothing is queued behind
        # the stop marker.
        self._changed = threading.Condition()
        self._queued_texts = 0     # texts waiting in the queue
        self._running_texts = 0    # texts in the lanes' batches
        self._running_batches = 0  # lanes running a batch
        self.lanes = ThreadPoolExecutor(lanes, thread_name_prefix=f"gradus-lane-{alias}")
        self.thread = threading.Thread(target=self._run, name=f"gradus-infer-{alias}", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> bool | None:
        """Queue a job; False at once when the queue is full (the caller answers 503), None when the slot
        was closed meanwhile (the caller routes again)."""
        with self._changed:
            if self.closed:
                return None
            try:
                self.queue.put_nowait(job)
            except queue.Full:
                self.metrics.rejected.labels(self.alias).inc()
                return False
            self._queued_texts += len(job.texts)
            self._changed.notify()
        self.metrics.queue_depth.labels(self.alias).set(self.queue.qsize())
        return True

    def stop(self, timeout: float = 30.0) -> None:
        """Take no more jobs, answer what is queued, then end the worker and its lanes."""
        with self._changed:
            self.closed = True  # from now on every lane drains the queue, whatever the spill threshold
            self._changed.notify()
        self.queue.put(self._STOP)  # blocks while the queue is full: the worker is draining it
        self.thread.join(timeout)

    def _has_work(self) -> bool:
        """Whether a free lane starts a batch now: when no lane is running, as soon as anything is queued;
        beside a running lane, only once `spill` texts wait (or the slot is stopping)."""
        if self.closed:
            return True
        return self._queued_texts > 0 and (self._running_batches == 0 or self._queued_texts >= self.spill)

    def _share(self) -> int:
        """Texts this batch waits for: the work in the slot (queued and running) divided among the lanes that
        will be running, at most max_batch_size."""
        with self._changed:
            outstanding, busy = self._queued_texts + self._running_texts, self._running_batches + 1
        return min(self.max_batch_size, max(1, -(-outstanding // busy)))

    def _collect(self, first: Job) -> tuple[list[Job], int, bool]:
        """The first job plus what arrives within max_wait, up to this lane's share of the work; and how many
        texts that makes."""
        batch, texts, stop = [first], len(first.texts), False
        deadline = time.perf_counter() + self.max_wait
        while texts < self._share():  # arrivals while it waits raise the share
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
        return batch, texts, stop

    def _run(self) -> None:
        try:
            while True:
                self._free.acquire()
                with self._changed:
                    self._changed.wait_for(self._has_work)
                first = self.queue.get()
                if first is self._STOP:
                    return
                batch, size, stop = self._collect(first)
                with self._changed:
                    self._queued_texts -= size
                    self._running_texts += size
                    self._running_batches += 1
                self.metrics.queue_depth.labels(self.alias).set(self.queue.qsize())
                self.lanes.submit(self._lane, batch, size)
                if stop:
                    return
        finally:
            self.lanes.shutdown(wait=True)  # the batches already cut are answered

    def _lane(self, batch: list[Job], size: int) -> None:
        try:
            self._answer(batch)
        except Exception:  # _answer settles model failures itself; this is a bug, logged, never a dead lane
            log.exception("batch of %d request(s) on %s not answered", len(batch), self.alias)
        finally:
            with self._changed:
                self._running_texts -= size
                self._running_batches -= 1
                self._changed.notify()
            self._free.release()

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
        except Exception as exc:  # a model failure fails its own requests (500), never the worker or the others
            if len(live) > 1:
                # One request's texts must not fail the others of its pass: each is run again alone, so only
                # the one that fails alone is answered with the error (the edge checks make this rare).
                log.warning("inference failed on %s %s for a batch of %d requests (%s: %s); answering each alone",
                            self.alias, model.version, len(live), type(exc).__name__, exc)
                self.metrics.batch_retries.labels(self.alias).inc()
                for job in live:
                    self._answer([job])
                return
            log.exception("inference failed on %s %s", self.alias, model.version)
            for job in live:
                job.loop.call_soon_threadsafe(_settle, job.future, exc, None)
            return
        self.metrics.batch_size.labels(self.alias, model.version or "-").observe(len(texts))
        ranked = task_type(getattr(model, "task", DEFAULT_TASK)).rank(probabilities)
        start = 0
        for job in live:
            end = start + len(job.texts)
            answer = Answer(probabilities[start:end], ranked[start:end], model)
            start = end
            job.loop.call_soon_threadsafe(_settle, job.future, None, answer)


def _settle(future: asyncio.Future[Any], error: Exception | None, answer: Answer | None) -> None:
    if future.done():  # the request gave up (timeout, client gone) meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(answer)
