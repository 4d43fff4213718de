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
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, ORJSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from gradus import __version__
from gradus.config.params import Params
from gradus.modeling import pick_device
from gradus.registry.versions import project_registry
from gradus.text import CONTROL_CHARS, text_problem
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
    data: list[StrictStr] | None = Field(None, description="the texts; absent when sent as binary data "
                                                            "(parameters.binary_data_size: binary tensor extension)")
    parameters: dict[str, Any] | None = None


class InferRequest(_Strict):
    id: StrictStr | None = None
    inputs: list[InferInput] = Field(min_length=1, max_length=1)
    outputs: list[dict[str, Any]] | None = None
    parameters: dict[str, Any] | None = None


class FeedbackStored(BaseModel):
    stored: bool
    label: str
    request_id: str | None


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class InferOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[str] | list[float]


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None
    id: str
    parameters: dict[str, Any]
    outputs: list[InferOutput]


# The binary tensor data extension, as Triton names it in its server metadata.
V2_EXTENSIONS = ("binary_tensor_data",)


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its $defs put in place (the infer route reads its body itself, so FastAPI
    does not list the request's models among the document's components)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return walk(dict(defs[node["$ref"].rsplit("/", 1)[-1]]))
            return {key: walk(value) for key, value in node.items()}
        return [walk(item) for item in node] if isinstance(node, list) else node

    return walk(schema)


def parse_infer(body: bytes, header_length: str | None) -> InferRequest:
    """An infer request from its raw body: JSON (any content type, or none), or a JSON header followed by
    binary tensor data. Errors are 400 (the body cannot be read) or 422 (it reads but is invalid)."""
    binary = b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise HTTPException(400, f"Inference-Header-Content-Length {header_length!r} is not a length within "
                                     f"the {len(body)}-byte body (binary tensor data extension)")
        body, binary = body[:int(header_length)], body[int(header_length):]
    try:
        request = InferRequest.model_validate_json(body)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise HTTPException(400, "the body is not JSON (send the inference request as JSON, or a JSON header "
                                     "with Inference-Header-Content-Length for binary tensor data)") from None
        raise HTTPException(422, validation_message(exc.errors())) from None
    tensor = request.inputs[0]
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is None:
        if tensor.data is None:
            raise HTTPException(422, f"input {tensor.name!r}: no data (give data, or binary_data_size with "
                                     "Inference-Header-Content-Length)")
        return request
    if header_length is None or not isinstance(size, int) or size != len(binary):
        raise HTTPException(400, f"input {tensor.name!r}: binary_data_size {size!r} does not match the "
                                 f"{len(binary)} bytes after the Inference-Header-Content-Length header")
    texts = _bytes_elements(binary, tensor.name)
    return request.model_copy(update={"inputs": [tensor.model_copy(update={"data": texts})]})


def _bytes_elements(data: bytes, name: str) -> list[str]:
    """BYTES tensor elements in the binary extension: a 4-byte little-endian length, then that many bytes."""
    texts, offset = [], 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise HTTPException(400, f"input {name!r}: binary data ends inside an element's 4-byte length")
        length = int.from_bytes(data[offset:offset + 4], "little")
        raw = data[offset + 4:offset + 4 + length]
        if len(raw) != length:
            raise HTTPException(400, f"input {name!r}: element {len(texts)} is cut short ({len(raw)} of "
                                     f"{length} bytes)")
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise HTTPException(422, f"input {name!r} element {len(texts)} refused (text_control_chars): not "
                                     "valid UTF-8") from None
        offset += 4 + length
    return texts


class ErrorBody(BaseModel):
    """Every error of a /v1, /metrics or /admin route: one line saying what is wrong and what to do."""

    detail: str


class V2ErrorBody(BaseModel):
    """Every error of a /v2 route, as the Open Inference Protocol specifies it."""

    error: str


def _errors(*codes: int, v2: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses a route can return, all with the one error model."""
    words = {400: "malformed request", 401: "no bearer token", 403: "wrong token", 404: "not found or disabled",
             413: "body over serving.max_body_bytes", 422: "invalid request: the message names the field, text "
             "index and rule", 499: "client left (nothing is sent)", 500: "the model failed on this request",
             503: "not ready, or the queue is full (Retry-After)", 504: "no answer within serving.request_timeout_s"}
    model = V2ErrorBody if v2 else ErrorBody
    return {code: {"model": model, "description": words[code]} for code in codes}


PREDICT_ERRORS = (400, 413, 422, 500, 503, 504)


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
        self.check_texts(body.texts)
        self.check_key(body.key)
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
            await _too_large(send_status, limit, scope["path"])
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


async def _too_large(send: Any, limit: int, path: str = "/v1") -> None:
    body = json.dumps(error_body(path, _over_limit(limit))).encode()
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
    _document_text_rules(app, service)
    return app


def _document_text_rules(app: FastAPI, service: Service) -> None:
    """The OpenAPI document says what the service accepts, so a request the schema allows is one it answers:
    the text rules and limits of this service's settings, the labels of the models it serves now (for
    feedback), and the v2 input's shape matching its data. Built on each request for /openapi.json (the
    labels follow hot swaps); the pydantic models stay the first check, these rules the service's own."""
    generate = app.openapi

    def document() -> dict[str, Any]:
        app.openapi_schema = None
        doc = generate()
        text = text_schema(service.params.validation.min_text_chars, service.cfg.max_chars)
        schemas = doc["components"]["schemas"]
        predict = schemas["PredictRequest"]["properties"]["texts"]
        predict.update(items=text, maxItems=service.cfg.max_texts)
        feedback = schemas["FeedbackRequest"]
        labels = sorted(service.models.labels())
        if labels:
            feedback["properties"]["label"] = {"type": "string", "enum": labels, "description": "the right label"}
        feedback["oneOf"] = [
            {"required": ["request_id"], "properties": {"request_id": {"type": "string"}, "text": {"type": "null"}}},
            {"required": ["text"], "properties": {"text": text, "request_id": {"type": "null"}}}]
        body = doc["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]["application/json"]
        inputs = body["schema"]["properties"]["inputs"]
        tensor = inputs["items"]
        # One alternative per size: the shape [n] with exactly n texts (JSON Schema relates two fields no
        # other way). Data sent as binary (the extension) is outside what a JSON body schema can say.
        inputs["items"] = {"anyOf": [
            {**tensor, "required": [*tensor["required"], "data"],
             "properties": {**tensor["properties"], "shape": {"type": "array", "const": [n]},
                            "data": {"type": "array", "items": text, "minItems": n, "maxItems": n}}}
            for n in range(1, service.cfg.max_texts + 1)]}
        return doc

    app.openapi = document  # type: ignore[method-assign]


def text_schema(min_chars: int, max_chars: int) -> dict[str, Any]:
    """A text as the validate stage keeps it, in JSON Schema: not blank, within the length limits, no control
    characters or invalid Unicode (gradus.text)."""
    # Lone surrogates are left out of the documented class: JSON text cannot validly carry them (RFC 8259,
    # 8.2), and regex engines of JSON Schema validators refuse the range; the service refuses them all the same.
    return {"type": "string", "minLength": min_chars, "maxLength": max_chars, "pattern": r"\S",
            "not": {"pattern": CONTROL_CHARS}}


def error_body(path: str, message: str) -> dict[str, str]:
    """One error shape per protocol: {"error": ...} on /v2 (the Open Inference Protocol), else {"detail": ...}."""
    return {"error": message} if path.startswith("/v2") else {"detail": message}


def error_response(exc: StarletteHTTPException, path: str = "/v1") -> Response:
    if exc.status_code == CLIENT_GONE:
        return Response(status_code=CLIENT_GONE)
    return JSONResponse(error_body(path, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


def validation_message(errors: list[Any]) -> str:
    """pydantic's errors as one line: `body.texts.0: Input should be a valid string; ...`."""
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
    return "invalid request: " + "; ".join(parts)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)  # the routes' errors and the router's own 404 / 405
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)  # one error shape: a line, not FastAPI's list of objects
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return JSONResponse(error_body(request.url.path, validation_message(exc.errors())), status_code=422)


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

    @app.post("/v1/predict", response_model=PredictResponse, tags=["inference"], responses=_errors(*PREDICT_ERRORS))
    async def predict(body: PredictRequest, request: Request) -> Response:
        """Classify texts; the answer names the version and alias that computed it. A text the validate stage
        would quarantine (blank, over-long, control characters, invalid Unicode) is refused with a 422 naming
        its index and the rule."""
        # Not re-validated against response_model (which documents it): on the hot path the second validation
        # is a measurable share of a request's Python time. A valid body rarely reaches this route: the
        # middleware answers it (Guard.predict); invalid ones come here for FastAPI's error messages.
        return ORJSONResponse(await service.predict(body, request))

    @app.post("/v1/feedback", status_code=201, tags=["inference"], response_model=FeedbackStored,
              responses=_errors(400, 404, 413, 422))
    async def feedback(body: FeedbackRequest, request: Request) -> dict[str, Any]:
        """Store the right label for an answered text (by request id and index) or for a text."""
        if body.text is not None:
            service.check_texts([body.text], "text")
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
                raise HTTPException(404, f"request_id {body.request_id!r} is not one of the last "
                                         f"{cfg.recent_requests} requests this service answered; send the text")
            if body.index >= len(remembered["texts"]):
                raise HTTPException(404, f"index {body.index} is out of range: request {body.request_id} had "
                                         f"{len(remembered['texts'])} text(s)")
            record |= {"text": remembered["texts"][body.index], "version": remembered["version"],
                       "alias": remembered["alias"], "predicted_label": remembered["predicted"][body.index]}
            request.state.alias, request.state.version = remembered["alias"], remembered["version"]
        await asyncio.to_thread(service.feedback.append, record)
        service.metrics.feedback.labels(record["alias"] or "-", record["version"] or "-").inc()
        return {"stored": True, "label": body.label, "request_id": body.request_id}

    @app.get("/v2", tags=["v2"], response_model=ServerMetadata)
    async def server_metadata() -> dict[str, Any]:
        return {"name": "gradus", "version": __version__, "extensions": list(V2_EXTENSIONS)}

    @app.get("/v2/health/live", tags=["v2"])
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", tags=["v2"], responses={503: {"description": "not ready"}})
    async def ready() -> JSONResponse:
        return JSONResponse({"ready": service.ready}, status_code=200 if service.ready else 503)

    @app.get("/v2/models/{name}", tags=["v2"], response_model=ModelMetadata, responses=_errors(404, v2=True))
    async def model_metadata(name: str) -> dict[str, Any]:
        model_name(name)
        return {"name": name, "versions": [v for v in service.models.describe()["slots"].values() if v],
                "platform": "pytorch_safetensors",
                "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
                "outputs": [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                            {"name": "confidence", "datatype": "FP32", "shape": [-1]}]}

    @app.get("/v2/models/{name}/ready", tags=["v2"],
             responses={**_errors(404, v2=True), 503: {"description": "not ready"}})
    async def model_ready(name: str) -> JSONResponse:
        model_name(name)
        return JSONResponse({"name": name, "ready": service.ready}, status_code=200 if service.ready else 503)

    @app.post("/v2/models/{name}/infer", tags=["v2"], response_model=InferResponse,
              responses=_errors(404, *PREDICT_ERRORS, v2=True),
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": _inlined(InferRequest.model_json_schema())}}}})
    async def infer(name: str, request: Request) -> Response:
        """Open Inference Protocol v2: one BYTES input of texts; outputs `label` (BYTES), `confidence` (FP32).
        The body is JSON with or without a content type (clients such as tritonclient send none), or the
        binary tensor data extension (Inference-Header-Content-Length: a JSON header, then each BYTES element
        as a 4-byte little-endian length and its UTF-8 bytes). Answers are JSON."""
        model_name(name)
        started = time.perf_counter()
        body = parse_infer(await request.body(), request.headers.get("inference-header-content-length"))
        tensor = body.inputs[0]
        texts = tensor.data or []
        if int(np.prod(tensor.shape)) != len(texts) or len(tensor.shape) != 1:
            raise HTTPException(422, f"input {tensor.name!r}: shape {tensor.shape} does not match "
                                     f"{len(texts)} texts (use [{len(texts)}])")
        service.check_texts(texts, f"input {tensor.name!r} element")
        key = (body.parameters or {}).get("key")
        key = key if isinstance(key, str) else None
        service.check_key(key)
        request_id = request.state.request_id = body.id or service.request_id()
        answer, route = await service.infer(texts, key, request)
        predictions = service.answered(request_id, texts, answer, route, started)
        # response_model documents the answer; not validated again per request, as for /v1/predict.
        return ORJSONResponse({"model_name": name, "model_version": answer.model.version, "id": request_id,
                               "parameters": {"alias": route.alias},
                               "outputs": [{"name": "label", "datatype": "BYTES", "shape": [len(predictions)],
                                            "data": [p["label"] for p in predictions]},
                                           {"name": "confidence", "datatype": "FP32", "shape": [len(predictions)],
                                            "data": [p["confidence"] for p in predictions]}]})

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text exposition format"}})
    async def metrics() -> Response:
        service.metrics.ready.set(1 if service.ready else 0)
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload", tags=["operations"], dependencies=[Depends(require_admin)],
              responses=_errors(401, 403, 404))
    async def reload() -> dict[str, Any]:
        """Check the registry's aliases now (refused versions are tried again)."""
        return await asyncio.to_thread(service.models.refresh, True)
