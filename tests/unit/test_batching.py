"""The batching policy of serving/batching.py on its own: when a second lane starts, and how work is split.

The model here is a timing probe (it sleeps and records each pass), because the policy is about when passes
start and how large they are; the service tests run the same Slot with real models over HTTP.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from serving.batching import Job, Slot
from serving.metrics import Metrics


@dataclass
class Probe:
    """Answers after `seconds`, recording (start, end, texts) per pass."""

    seconds: float
    labels: tuple[str, ...] = ("a", "b")
    version: str = "vprobe"
    backend: str = "probe"
    passes: list[tuple[float, float, int]] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)

    def predict(self, texts: list[str], batch_size: int = 64) -> object:
        start = time.monotonic()
        self.started.set()
        time.sleep(self.seconds)
        self.passes.append((start, time.monotonic(), len(texts)))
        probabilities = np.tile(np.array([[0.25, 0.75]], dtype=np.float32), (len(texts), 1))
        return type("Predictions", (), {"probabilities": probabilities})()


def _slot(probe: Probe, *, lanes: int, max_batch_size: int, max_wait_ms: float) -> Slot:
    return Slot("champion", probe, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, queue_size=64,
                metrics=Metrics(), lanes=lanes)


def _job(loop: asyncio.AbstractEventLoop, texts: int = 1) -> Job:
    return Job([f"text {i}" for i in range(texts)], loop.create_future(), loop)


def test_a_second_lane_starts_only_beside_a_backlog_and_takes_its_share() -> None:
    """max_batch_size 8: a second pass starts beside a running one once 2 texts wait, and takes its share:
    (5 queued + 1 running) / 2 lanes = 3; the last 2 wait for a lane."""
    probe = Probe(0.4)
    slot = _slot(probe, lanes=2, max_batch_size=8, max_wait_ms=300)

    async def scenario() -> list[Job]:
        loop = asyncio.get_running_loop()
        first = _job(loop)
        assert slot.submit(first)
        await asyncio.to_thread(probe.started.wait, 5)
        rest = [_job(loop) for _ in range(5)]
        with slot._changed:  # all five queued before the worker looks (the lock is reentrant)
            assert all(slot.submit(job) for job in rest)
        await asyncio.wait_for(asyncio.gather(first.future, *(job.future for job in rest)), 10)
        return [first, *rest]

    try:
        jobs = asyncio.run(scenario())
    finally:
        slot.stop()
    assert [texts for _, _, texts in sorted(probe.passes)] == [1, 3, 2]
    (_, first_end, _), (second_start, _, _), _ = sorted(probe.passes)
    assert second_start < first_end  # side by side
    assert all(job.future.result().probabilities.shape == (1, 2) for job in jobs)


def test_at_light_load_one_lane_answers_and_a_lone_request_never_waits() -> None:
    """One text beside a running pass waits for that pass (fewer, larger passes at light load) instead of
    starting a second lane; a request on an idle slot starts at once, max_wait_ms notwithstanding."""
    probe = Probe(0.3)
    slot = _slot(probe, lanes=2, max_batch_size=8, max_wait_ms=1000)

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        sent = time.monotonic()
        first = _job(loop)
        assert slot.submit(first)
        await asyncio.to_thread(probe.started.wait, 5)
        second = _job(loop)
        assert slot.submit(second)
        await asyncio.wait_for(asyncio.gather(first.future, second.future), 10)
        return sent

    try:
        sent = asyncio.run(scenario())
    finally:
        slot.stop()
    (first_start, first_end, first_texts), (second_start, _, second_texts) = sorted(probe.passes)
    assert first_start - sent < 0.2  # not held for max_wait_ms (1 s)
    assert (first_texts, second_texts) == (1, 1) and second_start >= first_end
