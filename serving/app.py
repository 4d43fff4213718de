"""The inference service: a FastAPI app serving the registry's champion (and canary) with dynamic batching,
hot swap, Prometheus metrics, a prediction log and a feedback endpoint. `gradus serve` runs it with uvicorn.

Routes: POST /v1/predict, POST /v1/feedback, the Open Inference Protocol v2 paths (/v2, /v2/health/live,
/v2/health/ready, /v2/models/{name}, /v2/models/{name}/ready, POST /v2/models/{name}/infer), GET /metrics,
POST /admin/reload (bearer token), and FastAPI's /docs.

Rooms: `schemas` (requests, answers, error bodies, the v2 parser), `service` (the running service's state and
what every request goes through), `middleware` (limits, the /v1/predict fast path, metrics, access log),
`routes` (the handlers, on one APIRouter), and here the app factory and its OpenAPI document.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gradus import __version__
from gradus.config.params import Params
from gradus.task_types.seam import task_type
from gradus.text import CONTROL_CHARS
from serving.middleware import Guard
from serving.routes import router
from serving.schemas import error_body, error_response, validation_message
from serving.service import Service

log = logging.getLogger("gradus.serving")



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
    app.include_router(router)
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
        if labels:  # the served task type's answer field: `label` or `labels`, of the labels served now
            feedback["allOf"] = [task_type(service.models.task()).feedback_schema(labels)]
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


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)  # the routes' errors and the router's own 404 / 405
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)  # one error shape: a line, not FastAPI's list of objects
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return JSONResponse(error_body(request.url.path, validation_message(exc.errors())), status_code=422)


