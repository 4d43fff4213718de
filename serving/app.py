"""The inference service: a FastAPI app serving the registry's champion (and canary) with dynamic batching,
hot swap, Prometheus metrics, a prediction log and a feedback endpoint. `gradus serve` runs it with uvicorn.

Routes: POST /v1/predict, POST /v1/feedback, the Open Inference Protocol v2 paths (/v2, /v2/health/live,
/v2/health/ready, /v2/models/{name}, /v2/models/{name}/ready, POST /v2/models/{name}/infer), GET /metrics,
POST /admin/reload (bearer token), and FastAPI's /docs.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import os
import re
import time
import uuid
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, ORJSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, model_validator

from gradus import __version__
from gradus.config import Params
from gradus.modeling import pick_device
from gradus.registry import project_registry
from serving.batching import Answer, Job, service_threads
from serving.metrics import Metrics
from serving.models import ModelSet, Route
from serving.records import FeedbackStore, PredictionLog

log = logging.getLogger("gradus.serving")
access = logging.getLogger("gradus.serving.access")
WATCH_AFTER_S = 0.05  # a request waiting longer than this starts watching for its client leaving
CLIENT_GONE = 499  # nginx's code for "client closed the request": nothing is sent, it is only counted


# ------------------------------------------------------------------------------------------ schemas


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(_Strict):
    texts: list[StrictStr] = Field(min_length=1, description="the texts to classify")
    key: StrictStr | None = Field(None, description="routing key: the same key always reaches the same version")


class Score(BaseModel):
    label: str
    score: float


class Prediction(BaseModel):
    label: str
    confidence: float
    top_k: list[Score]


class ModelRef(BaseModel):
    version: str | None
    alias: str


class PredictResponse(BaseModel):
    request_id: str
    model: ModelRef
    predictions: list[Prediction]


class FeedbackRequest(_Strict):
    label: StrictStr = Field(min_length=1, description="the right label")
    request_id: StrictStr | None = Field(None, description="a request this service answered ...")
    index: int = Field(0, ge=0, description="... and which of its texts (0 = the first)")
    text: StrictStr | None = Field(None, description="or the text itself")

    @model_validator(mode="after")
    def _one_reference(self) -> FeedbackRequest:
        if (self.request_id is None) == (self.text is None):
            raise ValueError("give exactly one of request_id (with index) or text")
        return self


class InferInput(_Strict):
    name: StrictStr
    shape: list[int]
    datatype: Literal["BYTES"]
    data: list[StrictStr]
    parameters: dict[str, Any] | None = None


class InferRequest(_Strict):
    id: StrictStr | None = None
    inputs: list[InferInput] = Field(min_length=1, max_length=1)
    outputs: list[dict[str, Any]] | None = None
    parameters: dict[str, Any] | None = None


# -------------------------------------------------------------------------------------------- state


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
        self.check_limits(body.texts)
        answer, route = await self.infer(body.texts, body.key, request)
        return {"request_id": request_id, "model": {"version": answer.model.version, "alias": route.alias},
                "predictions": self.answered(request_id, body.texts, answer, route, started)}

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

    def check_limits(self, texts: list[str]) -> None:
        if len(texts) > self.cfg.max_texts:
            raise HTTPException(422, f"too many texts: {len(texts)} > serving.max_texts={self.cfg.max_texts}; "
                                     "split the request")
        for index, text in enumerate(texts):
            if len(text) > self.cfg.max_chars:
                raise HTTPException(422, f"texts[{index}] has {len(text)} characters > serving.max_chars="
                                         f"{self.cfg.max_chars}")

    def log_answers(self, request_id: str, texts: list[str], answer: Answer, alias: str,
                    started: float) -> list[str]:
        """Log and count one request's answers (a served or a shadow one); returns the predicted labels."""
        model, probabilities = answer.model, answer.probabilities
        best = answer.ranked[:, 0]
        predicted = np.asarray(model.labels)[best].tolist()
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        now = datetime.now(UTC).isoformat()
        version = model.version or "-"
        self.predictions.record([{"time": now, "request_id": request_id, "text": text, "version": version,
                                  "alias": alias, "predicted_label": label,
                                  "confidence": float(probabilities[i, best[i]]), "latency_ms": latency_ms}
                                 for i, (text, label) in enumerate(zip(texts, predicted, strict=True))])
        for label in predicted:
            self.metrics.predictions.labels(label, alias, version).inc()
        return predicted

    def answered(self, request_id: str, texts: list[str], answer: Answer, route: Route,
                 started: float) -> list[dict[str, Any]]:
        """The per-text answers. Logging, counting, remembering them for feedback and the shadow's copy run
        right after, once the event loop has sent the answers ready now: when a pass ends, its requests are
        answered one after another on the event loop, and the next pass waits for their clients' next texts.
        (Any request, a feedback one too, is read from its socket only after these callbacks have run.)"""
        labels, probabilities = answer.model.labels, answer.probabilities
        top = answer.ranked[:, :self.cfg.top_k]
        predictions = [{"label": labels[top[i, 0]], "confidence": float(probabilities[i, top[i, 0]]),
                        "top_k": [{"label": labels[j], "score": float(probabilities[i, j])} for j in top[i]]}
                       for i in range(len(texts))]
        asyncio.get_running_loop().call_soon(self._after_answer, request_id, texts, answer, route, started)
        return predictions

    def _after_answer(self, request_id: str, texts: list[str], answer: Answer, route: Route,
                      started: float) -> None:
        predicted = self.log_answers(request_id, texts, answer, route.alias, started)
        self.feedback.remember_request(request_id, texts, predicted, answer.model.version, route.alias)
        self.copy_to_shadow(request_id, texts, answer.model.version)


async def _until_disconnected(request: Request) -> None:
    """Returns when the client has gone. The body is read by now, so the server's next message can only be
    the disconnect: waiting for it costs nothing, where polling is_disconnected() ten times a second per
    waiting request took a tenth of a core of the event loop's time once a backlog formed."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


# -------------------------------------------------------------------------------------- middleware


_ROUTES = [(re.compile(p), name) for p, name in [
    (r"^/v2/models/[^/]+/infer$", "/v2/models/{name}/infer"), (r"^/v2/models/[^/]+/ready$", "/v2/models/{name}/ready"),
    (r"^/v2/models/[^/]+$", "/v2/models/{name}")]]
_FIXED = {"/v1/predict", "/v1/feedback", "/v2", "/v2/health/live", "/v2/health/ready", "/metrics", "/admin/reload",
          "/docs", "/openapi.json"}


def route_name(path: str) -> str:
    """A bounded set of route labels (unknown paths share one), so metrics cannot explode in cardinality."""
    if path in _FIXED:
        return path
    return next((name for pattern, name in _ROUTES if pattern.match(path)), "other")


class Guard:
    """Pure ASGI middleware: the body-size limit (413 before the app reads a byte more), the fast path of
    POST /v1/predict (`predict` below), then metrics and one access-log line per request naming the alias and
    version that answered."""

    def __init__(self, app: Any, service: Service) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        limit = self.service.cfg.max_body_bytes
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        status = {"code": 500}

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        if length is not None and length.isdigit() and int(length) > limit:
            await _too_large(send_status, limit)
        elif (scope["method"] == "POST" and scope["path"] == "/v1/predict"
              and headers.get(b"content-type", b"application/json").startswith(b"application/json")):
            await self.predict(scope, _limited(receive, limit), send_status)
        else:
            await self.app(scope, _limited(receive, limit), send_status)
        # After the other answers ready now are sent, like Service.answered's bookkeeping.
        asyncio.get_running_loop().call_soon(self._observe, scope, status["code"], time.perf_counter() - started)

    async def predict(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """POST /v1/predict without the framework's layers of middleware, routing and dependency solving, which
        were a fifth of a request's event-loop time at capacity (and when a pass ends, its requests are
        answered one after another on the event loop while that lane waits for their clients' next texts). A
        JSON body that validates is answered here by the route's own code (Service.predict); any other goes on
        to the route, so every error reads as FastAPI words it."""
        body = bytearray()
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client left before sending its body
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
        except _BodyTooLarge:
            await _too_large(send, self.service.cfg.max_body_bytes)
            return
        try:
            parsed = PredictRequest.model_validate_json(body)
        except ValidationError:
            await self.app(scope, _replay(bytes(body), receive), send)
            return
        try:
            response = ORJSONResponse(await self.service.predict(parsed, Request(scope, receive)))
        except HTTPException as exc:
            response = error_response(exc)
        await response(scope, receive, send)

    def _observe(self, scope: dict[str, Any], code: int, seconds: float) -> None:
        state = scope.get("state") or {}
        alias, version = state.get("alias", "-"), state.get("version") or "-"
        route = route_name(scope["path"])
        metrics = self.service.metrics
        metrics.requests.labels(route, str(code), alias, version).inc()
        if code >= 400:
            metrics.errors.labels(route, str(code), alias, version).inc()
        if route != "/metrics":
            metrics.latency.labels(route, alias, version).observe(seconds)
            access.info("%s %s %s %d alias=%s version=%s %.1fms", state.get("request_id", "-"), scope["method"],
                        scope["path"], code, alias, version, seconds * 1000)


def _over_limit(limit: int) -> str:
    return f"request body over serving.max_body_bytes={limit}"


class _BodyTooLarge(HTTPException):
    """Raised from the body stream; an HTTPException so FastAPI's body parsing passes it through as 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _over_limit(limit))


def _limited(receive: Any, limit: int) -> Any:
    """A receive that stops a streamed (chunked) body at the limit."""
    seen = {"bytes": 0}

    async def wrapped() -> dict[str, Any]:
        message = await receive()
        if message["type"] == "http.request":
            seen["bytes"] += len(message.get("body", b""))
            if seen["bytes"] > limit:
                raise _BodyTooLarge(limit)
        return message

    return wrapped


def _replay(body: bytes, receive: Any) -> Any:
    """A receive that gives the body already read, then whatever the connection says next."""
    sent = False

    async def replayed() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


async def _too_large(send: Any, limit: int) -> None:
    body = json.dumps({"detail": _over_limit(limit)}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# -------------------------------------------------------------------------------------------- the app


def create_app(params: Params, root: Path) -> FastAPI:
    """The service for a project (params.yaml's registry and serving sections, paths from `root`)."""
    service = Service(params, root)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        import torch

        torch.set_num_threads(service.threads)
        log.info("%d lane(s) per served model, %d torch thread(s) each, on %s", service.models.lanes,
                 service.threads, service.models.device)
        await asyncio.to_thread(service.models.refresh)
        await asyncio.to_thread(service.models.publish_drift)
        if not service.models.ready:
            log.error("no champion could be loaded (%s); not ready until one is",
                      service.models.last_error or "no champion alias in the registry")
        service.models.start_polling()
        service.accepting = True
        service.metrics.ready.set(1 if service.ready else 0)
        yield
        service.accepting = False
        service.metrics.ready.set(0)
        await asyncio.to_thread(service.models.stop)
        await asyncio.to_thread(service.predictions.close)

    app = FastAPI(title="gradus inference service", version=__version__, lifespan=lifespan,
                  description="Text classification by the registry's champion (and canary), dynamically batched.")
    app.state.service = service
    app.add_middleware(Guard, service=service)
    _add_error_handlers(app)
    _add_routes(app, service)
    return app


def error_response(exc: HTTPException) -> Response:
    if exc.status_code == CLIENT_GONE:
        return Response(status_code=CLIENT_GONE)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:
        return error_response(exc)


def _add_routes(app: FastAPI, service: Service) -> None:
    cfg = service.cfg

    def require_admin(authorization: str | None = Header(None)) -> None:
        if service.admin_token is None:
            raise HTTPException(404, f"admin routes are disabled: set {cfg.admin_token_env} to enable them")
        if not authorization or not authorization.startswith("Bearer "):
            raise HTTPException(401, "admin routes need 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(authorization[7:].encode(), service.admin_token.encode()):
            raise HTTPException(403, "wrong admin token")

    def model_name(name: str) -> None:
        if name != cfg.model_name:
            raise HTTPException(404, f"unknown model {name!r}; this service serves {cfg.model_name!r}")

    @app.post("/v1/predict", response_model=PredictResponse, tags=["inference"])
    async def predict(body: PredictRequest, request: Request) -> Response:
        """Classify texts; the answer names the version and alias that computed it."""
        # Not re-validated against response_model (which documents it): on the hot path the second validation
        # is a measurable share of a request's Python time. A valid body rarely reaches this route: the
        # middleware answers it (Guard.predict); invalid ones come here for FastAPI's error messages.
        return ORJSONResponse(await service.predict(body, request))

    @app.post("/v1/feedback", status_code=201, tags=["inference"])
    async def feedback(body: FeedbackRequest, request: Request) -> dict[str, Any]:
        """Store the right label for an answered text (by request id and index) or for a text."""
        known = service.models.labels()
        if body.label not in known:
            raise HTTPException(422, f"label {body.label!r} is not one the served models know ({len(known)} labels, "
                                     f"e.g. {sorted(known)[:5]})")
        record: dict[str, Any] = {"time": datetime.now(UTC).isoformat(), "label": body.label, "text": body.text,
                                  "request_id": body.request_id, "version": None, "alias": None,
                                  "predicted_label": None}
        if body.request_id is not None:
            remembered = service.feedback.request(body.request_id)
            if remembered is None:
                raise HTTPException(422, f"request_id {body.request_id!r} is not one of the last "
                                         f"{cfg.recent_requests} requests this service answered; send the text")
            if body.index >= len(remembered["texts"]):
                raise HTTPException(422, f"index {body.index} is out of range: request {body.request_id} had "
                                         f"{len(remembered['texts'])} text(s)")
            record |= {"text": remembered["texts"][body.index], "version": remembered["version"],
                       "alias": remembered["alias"], "predicted_label": remembered["predicted"][body.index]}
            request.state.alias, request.state.version = remembered["alias"], remembered["version"]
        await asyncio.to_thread(service.feedback.append, record)
        service.metrics.feedback.labels(record["alias"] or "-", record["version"] or "-").inc()
        return {"stored": True, "label": body.label, "request_id": body.request_id}

    @app.get("/v2", tags=["v2"])
    async def server_metadata() -> dict[str, Any]:
        return {"name": "gradus", "version": __version__, "extensions": []}

    @app.get("/v2/health/live", tags=["v2"])
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", tags=["v2"])
    async def ready() -> JSONResponse:
        return JSONResponse({"ready": service.ready}, status_code=200 if service.ready else 503)

    @app.get("/v2/models/{name}", tags=["v2"])
    async def model_metadata(name: str) -> dict[str, Any]:
        model_name(name)
        return {"name": name, "versions": [v for v in service.models.describe()["slots"].values() if v],
                "platform": "pytorch_safetensors",
                "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
                "outputs": [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                            {"name": "confidence", "datatype": "FP32", "shape": [-1]}]}

    @app.get("/v2/models/{name}/ready", tags=["v2"])
    async def model_ready(name: str) -> JSONResponse:
        model_name(name)
        return JSONResponse({"name": name, "ready": service.ready}, status_code=200 if service.ready else 503)

    @app.post("/v2/models/{name}/infer", tags=["v2"])
    async def infer(name: str, body: InferRequest, request: Request) -> dict[str, Any]:
        """Open Inference Protocol v2: one BYTES input of texts; outputs `label` (BYTES), `confidence` (FP32)."""
        model_name(name)
        started = time.perf_counter()
        tensor = body.inputs[0]
        if int(np.prod(tensor.shape)) != len(tensor.data) or len(tensor.shape) != 1:
            raise HTTPException(422, f"input {tensor.name!r}: shape {tensor.shape} does not match "
                                     f"{len(tensor.data)} texts (use [{len(tensor.data)}])")
        service.check_limits(tensor.data)
        key = (body.parameters or {}).get("key")
        request_id = request.state.request_id = body.id or service.request_id()
        answer, route = await service.infer(tensor.data, key if isinstance(key, str) else None, request)
        predictions = service.answered(request_id, tensor.data, answer, route, started)
        return {"model_name": name, "model_version": answer.model.version, "id": request_id,
                "parameters": {"alias": route.alias},
                "outputs": [{"name": "label", "datatype": "BYTES", "shape": [len(predictions)],
                             "data": [p["label"] for p in predictions]},
                            {"name": "confidence", "datatype": "FP32", "shape": [len(predictions)],
                             "data": [p["confidence"] for p in predictions]}]}

    @app.get("/metrics", tags=["operations"])
    async def metrics() -> Response:
        service.metrics.ready.set(1 if service.ready else 0)
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload", tags=["operations"], dependencies=[Depends(require_admin)])
    async def reload() -> dict[str, Any]:
        """Check the registry's aliases now (refused versions are tried again)."""
        return await asyncio.to_thread(service.models.refresh, True)
