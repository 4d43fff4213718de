"""The service's routes on one APIRouter; each handler gets the running service through a dependency."""

from __future__ import annotations

import asyncio
import hmac
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.responses import JSONResponse, ORJSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gradus import __version__
from gradus.task_types.seam import DEFAULT_TASK, task_type
from serving.schemas import (
    PREDICT_ERRORS,
    V2_EXTENSIONS,
    FeedbackRequest,
    FeedbackStored,
    InferRequest,
    InferResponse,
    ModelMetadata,
    PredictRequest,
    PredictResponse,
    ServerMetadata,
    _errors,
    _inlined,
    parse_infer,
)
from serving.service import Service

router = APIRouter()


def current_service(request: Request) -> Service:
    """The running service (one per app, kept in the app's state by create_app)."""
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(current_service)]


def require_admin(service: ServiceDep, authorization: str | None = Header(None)) -> None:
    if service.admin_token is None:
        raise HTTPException(404, f"admin routes are disabled: set {service.cfg.admin_token_env} to enable them")
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(401, "admin routes need 'Authorization: Bearer <token>'",
                            headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(authorization[7:].encode(), service.admin_token.encode()):
        raise HTTPException(403, "wrong admin token")

def served_model(name: str, service: ServiceDep) -> str:
    """The v2 path's model name, if it is this service's."""
    if name != service.cfg.model_name:
        raise HTTPException(404, f"unknown model {name!r}; this service serves {service.cfg.model_name!r}")
    return name

@router.post("/v1/predict", response_model=PredictResponse, tags=["inference"], responses=_errors(*PREDICT_ERRORS))
async def predict(body: PredictRequest, request: Request, service: ServiceDep) -> Response:
    """Classify texts; the answer names the version and alias that computed it. A text the validate stage
    would quarantine (blank, over-long, control characters, invalid Unicode) is refused with a 422 naming
    its index and the rule."""
    # Not re-validated against response_model (which documents it): on the hot path the second validation
    # is a measurable share of a request's Python time. A valid body rarely reaches this route: the
    # middleware answers it (Guard.predict); invalid ones come here for FastAPI's error messages.
    return ORJSONResponse(await service.predict(body, request))

@router.post("/v1/feedback", status_code=201, tags=["inference"], response_model=FeedbackStored,
          responses=_errors(400, 404, 413, 422))
async def feedback(body: FeedbackRequest, request: Request, service: ServiceDep) -> dict[str, Any]:
    """Store the right answer for an answered text (by request id and index) or for a text: `label` where the
    model answers one label per text, `labels` (a list) where it answers a label set."""
    if body.text is not None:
        service.check_texts([body.text], "text")
    kind = task_type(service.models.task())
    entities = None if body.entities is None else [entity.model_dump() for entity in body.entities]
    target, why = kind.feedback_target(body.label, body.labels, entities)
    if why is not None:
        raise HTTPException(422, why)
    known = kind.answer_labels(service.models.labels())
    unknown = [label for label in kind.counted(target) if label not in known]
    if unknown:
        raise HTTPException(422, f"label {unknown[0]!r} is not one the served models know ({len(known)} labels, "
                                 f"e.g. {sorted(known)[:5]})")
    record: dict[str, Any] = {"time": datetime.now(UTC).isoformat(), "label": target, "text": body.text,
                              "request_id": body.request_id, "version": None, "alias": None,
                              "predicted_label": None}
    if body.request_id is not None:
        remembered = service.feedback.request(body.request_id)
        if remembered is None:
            raise HTTPException(404, f"request_id {body.request_id!r} is not one of the last "
                                     f"{service.cfg.recent_requests} requests this service answered; send the text")
        if body.index >= len(remembered["texts"]):
            raise HTTPException(404, f"index {body.index} is out of range: request {body.request_id} had "
                                     f"{len(remembered['texts'])} text(s)")
        record |= {"text": remembered["texts"][body.index], "version": remembered["version"],
                   "alias": remembered["alias"], "predicted_label": remembered["predicted"][body.index]}
        request.state.alias, request.state.version = remembered["alias"], remembered["version"]
    if problem := kind.target_problem(record["text"], target):
        raise HTTPException(422, f"{problem}; nothing stored")
    await asyncio.to_thread(service.feedback.append, record)
    service.metrics.feedback.labels(record["alias"] or "-", record["version"] or "-").inc()
    return {"stored": True, "label": target, "request_id": body.request_id}

@router.get("/v2", tags=["v2"], response_model=ServerMetadata)
async def server_metadata() -> dict[str, Any]:
    return {"name": "gradus", "version": __version__, "extensions": list(V2_EXTENSIONS)}

@router.get("/v2/health/live", tags=["v2"])
async def live() -> dict[str, bool]:
    return {"live": True}

@router.get("/v2/health/ready", tags=["v2"], responses={503: {"description": "not ready"}})
async def ready(service: ServiceDep) -> JSONResponse:
    return JSONResponse({"ready": service.ready}, status_code=200 if service.ready else 503)

@router.get("/v2/models/{name}", tags=["v2"], response_model=ModelMetadata, responses=_errors(404, v2=True))
async def model_metadata(service: ServiceDep, name: str = Depends(served_model)) -> dict[str, Any]:
    return {"name": name, "versions": [v for v in service.models.describe()["slots"].values() if v],
            "platform": "pytorch_safetensors",
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
            "outputs": task_type(service.models.task()).v2_output_metadata()}

@router.get("/v2/models/{name}/ready", tags=["v2"],
         responses={**_errors(404, v2=True), 503: {"description": "not ready"}})
async def model_ready(service: ServiceDep, name: str = Depends(served_model)) -> JSONResponse:
    return JSONResponse({"name": name, "ready": service.ready}, status_code=200 if service.ready else 503)

@router.post("/v2/models/{name}/infer", tags=["v2"], response_model=InferResponse,
          responses=_errors(404, *PREDICT_ERRORS, v2=True),
          openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
              "schema": _inlined(InferRequest.model_json_schema())}}}})
async def infer(request: Request, service: ServiceDep, name: str = Depends(served_model)) -> Response:
    """Open Inference Protocol v2: one BYTES input of texts; outputs `label` (BYTES), `confidence` (FP32) for one
    label per text; `labels` (BYTES: each text's label set as a JSON array) and `scores` (FP32 [texts, labels],
    columns in the order of parameters.labels) for label sets.
    The body is JSON with or without a content type (clients such as tritonclient send none), or the
    binary tensor data extension (Inference-Header-Content-Length: a JSON header, then each BYTES element
    as a 4-byte little-endian length and its UTF-8 bytes). Answers are JSON."""
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
    kind, labels = task_type(getattr(answer.model, "task", DEFAULT_TASK)), list(answer.model.labels)
    parameters = {"alias": route.alias, **kind.v2_parameters(labels)}
    # response_model documents the answer; not validated again per request, as for /v1/predict.
    return ORJSONResponse({"model_name": name, "model_version": answer.model.version, "id": request_id,
                           "parameters": parameters,
                           "outputs": kind.v2_outputs(predictions, answer.probabilities, labels)})

@router.get("/metrics", tags=["operations"], response_class=PlainTextResponse,
         responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                          "description": "Prometheus text exposition format"}})
async def metrics(service: ServiceDep) -> Response:
    service.metrics.ready.set(1 if service.ready else 0)
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

@router.post("/admin/reload", tags=["operations"], dependencies=[Depends(require_admin)],
          responses=_errors(401, 403, 404))
async def reload(service: ServiceDep) -> dict[str, Any]:
    """Check the registry's aliases now (refused versions are tried again)."""
    return await asyncio.to_thread(service.models.refresh, True)
