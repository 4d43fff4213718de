"""The state of one running service: its models and lanes, limits, metrics, prediction log and feedback
store, and what every inference request goes through (edge checks, routing, waiting, bookkeeping)."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request

from gradus.config.params import Params
from gradus.modeling import pick_device
from gradus.registry.versions import project_registry
from gradus.task_types.seam import DEFAULT_TASK, task_type
from gradus.text import text_problem
from serving.batching import Answer, Job, service_threads
from serving.metrics import Metrics
from serving.models import ModelSet, Route
from serving.records import FeedbackStore, PredictionLog
from serving.schemas import CLIENT_GONE, PredictRequest

WATCH_AFTER_S = 0.05  # a request waiting longer than this starts watching for its client leaving



class Service:
    """Everything one running service holds."""

    def __init__(self, params: Params, root: Path) -> None:
        self.params, self.cfg, self.root = params, params.serving, root
        self.metrics = Metrics()
        self.models = ModelSet(project_registry(root, params), self.cfg, pick_device(self.cfg.device), self.metrics)
        self.predictions = PredictionLog(self.cfg.prediction_log, root, self.metrics, self.cfg.endpoint_url,
                                         params.validation.pii.kinds)
        self.feedback = FeedbackStore(self.cfg.feedback, root, self.cfg.recent_requests, self.cfg.endpoint_url)
        self.admin_token = os.environ.get(self.cfg.admin_token_env) or None
        self.accepting = False
        self.threads = service_threads(self.cfg.threads, self.models.lanes)
        # Request ids: 64 random bits per process and a counter, 32 hex digits like a UUID's; uuid4() reads
        # the OS's random source on every call, a measurable share of a request's event-loop time.
        self._ids = itertools.count()
        self._id_prefix = uuid.uuid4().hex[:16]

    def request_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):016x}"

    @property
    def ready(self) -> bool:
        return self.accepting and self.models.ready

    async def infer(self, texts: list[str], key: str | None, request: Request) -> tuple[Answer, Route]:
        """Route, queue, and wait for the batch worker's answer within the request budget."""
        if not self.ready:
            raise HTTPException(503, "not ready: no model loaded yet, or shutting down", headers={"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        job = Job(texts, loop.create_future(), loop)
        route = self.models.route(key)
        queued = route.slot.submit(job)
        if queued is None:  # that slot was just retired (canary cleared): the champion answers
            route = self.models.route(None if route.alias == "canary" else key)
            queued = route.slot.submit(job)
        request.state.alias, request.state.version = route.alias, route.slot.model.version
        if not queued:
            raise HTTPException(503, f"the {route.alias} queue is full (serving.queue_size={self.cfg.queue_size}); "
                                     "retry shortly", headers={"Retry-After": "1"})
        # Most answers come within a few batches' time; only a request still waiting then gets a task that
        # watches for its client leaving (one per request was a measurable share of the event loop's time).
        done, _ = await asyncio.wait({job.future}, timeout=min(WATCH_AFTER_S, self.cfg.request_timeout_s))
        watcher = None
        if not done:
            watcher = asyncio.ensure_future(_until_disconnected(request))
            done, _ = await asyncio.wait({job.future, watcher}, return_when=asyncio.FIRST_COMPLETED,
                                         timeout=max(self.cfg.request_timeout_s - WATCH_AFTER_S, 0))
            watcher.cancel()
        if job.future in done:
            if error := job.future.exception():
                raise HTTPException(500, f"inference failed on {route.alias} {route.slot.model.version}: "
                                         f"{type(error).__name__}: {error}")
            answer: Answer = job.future.result()
            request.state.version = answer.model.version
            return answer, route
        job.abandoned = True
        job.future.cancel()
        if watcher is not None and watcher in done:
            raise HTTPException(CLIENT_GONE, "client closed the request")
        raise HTTPException(504, f"no answer within serving.request_timeout_s={self.cfg.request_timeout_s:g}")

    async def predict(self, body: PredictRequest, request: Request) -> dict[str, Any]:
        """POST /v1/predict's answer (the route and the middleware's fast path both call this)."""
        started = time.perf_counter()
        request_id = request.state.request_id = self.request_id()
        self.check_texts(body.texts)
        self.check_key(body.key)
        answer, route = await self.infer(body.texts, body.key, request)
        return {"request_id": request_id, "model": {"version": answer.model.version, "alias": route.alias},
                "predictions": self.answered(request_id, body.texts, answer, route, started, body.scores)}

    def copy_to_shadow(self, request_id: str, texts: list[str], served_by: str | None) -> None:
        """During a release, both models answer the same texts: the shadow version gets a copy of what another
        version served, and what the shadow version served itself (as the canary) is copied to the champion.
        Copies go to the prediction log under the request's id, never to the client. Never waits: a full
        queue drops the copy (counted)."""
        slot = self.models.shadow
        if slot is not None and slot.model.version == served_by:
            slot = self.models.slots.get("champion")
        if slot is None or slot.model.version == served_by:
            return
        loop = asyncio.get_running_loop()
        job, started = Job(texts, loop.create_future(), loop), time.perf_counter()
        version = slot.model.version or "-"

        def logged(future: asyncio.Future[Any]) -> None:
            if future.cancelled() or future.exception() is not None:
                self.metrics.shadow_dropped.inc()
                self.metrics.shadow_answers.labels(version, "failed").inc()
                return
            self.metrics.shadow_answers.labels(version, "ok").inc()
            self.log_answers(request_id, texts, future.result(), "shadow", started)

        job.future.add_done_callback(logged)
        if not slot.submit(job):
            self.metrics.shadow_dropped.inc()
            self.metrics.shadow_answers.labels(version, "dropped").inc()

    def check_texts(self, texts: list[str], where: str = "texts") -> None:
        """Refuse, before any batching, what the validate stage would quarantine (the same rules from the same
        code, gradus.text): a blank, over-long, control-character or invalid-Unicode text fails its own request
        with a 422 naming the text's index and the rule, never a forward pass shared with other clients."""
        if len(texts) > self.cfg.max_texts:
            raise HTTPException(422, f"too many texts: {len(texts)} > serving.max_texts={self.cfg.max_texts}; "
                                     "split the request")
        for index, text in enumerate(texts):
            if problem := text_problem(text, self.params.validation.min_text_chars, self.cfg.max_chars):
                rule, reason = problem
                raise HTTPException(422, f"{where}[{index}] refused ({rule}): {reason}; the service takes what "
                                         "the validate stage keeps (serving.max_chars is the length limit)")

    @staticmethod
    def check_key(key: str | None) -> None:
        if key is not None and not _encodable(key):
            raise HTTPException(422, "key refused (text_control_chars): invalid Unicode (a lone surrogate)")

    def log_answers(self, request_id: str, texts: list[str], answer: Answer, alias: str,
                    started: float) -> list[Any]:
        """Log and count one request's answers (a served or a shadow one); returns them (a label; a label set,
        as the model's task type answers)."""
        model = answer.model
        kind = task_type(getattr(model, "task", DEFAULT_TASK))
        predicted, confidence = kind.logged(answer.probabilities, answer.ranked, list(model.labels),
                                            getattr(model, "decision", {}))
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        now = datetime.now(UTC).isoformat()
        version = model.version or "-"
        self.predictions.record([{"time": now, "request_id": request_id, "text": text, "version": version,
                                  "alias": alias, "predicted_label": label, "confidence": confidence[i],
                                  "latency_ms": latency_ms}
                                 for i, (text, label) in enumerate(zip(texts, predicted, strict=True))])
        for answered in predicted:
            for label in kind.counted(answered):
                self.metrics.predictions.labels(label, alias, version).inc()
        return predicted

    def answered(self, request_id: str, texts: list[str], answer: Answer, route: Route,
                 started: float, all_scores: bool = False) -> list[dict[str, Any]]:
        """The per-text answers. Logging, counting, remembering them for feedback and the shadow's copy run
        right after, once the event loop has sent the answers ready now: when a pass ends, its requests are
        answered one after another on the event loop, and the next pass waits for their clients' next texts.
        (Any request, a feedback one too, is read from its socket only after these callbacks have run.)"""
        model = answer.model
        predictions = task_type(getattr(model, "task", DEFAULT_TASK)).answer_json(
            answer.probabilities, answer.ranked, model.labels, getattr(model, "decision", {}), self.cfg.top_k,
            all_scores)
        asyncio.get_running_loop().call_soon(self._after_answer, request_id, texts, answer, route, started)
        return predictions

    def _after_answer(self, request_id: str, texts: list[str], answer: Answer, route: Route,
                      started: float) -> None:
        predicted = self.log_answers(request_id, texts, answer, route.alias, started)
        self.feedback.remember_request(request_id, texts, predicted, answer.model.version, route.alias)
        self.copy_to_shadow(request_id, texts, answer.model.version)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def _until_disconnected(request: Request) -> None:
    """Returns when the client has gone. The body is read by now, so the server's next message can only be
    the disconnect: waiting for it costs nothing, where polling is_disconnected() ten times a second per
    waiting request took a tenth of a core of the event loop's time once a backlog formed."""
    while (await request.receive())["type"] != "http.disconnect":
        pass

