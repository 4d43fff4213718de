"""The ASGI layer in front of the routes: body-size limits, the fast path of POST /v1/predict, metrics and the
access log for every request."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import ORJSONResponse
from pydantic import ValidationError

from serving.schemas import PredictRequest, error_body, error_response
from serving.service import Service

access = logging.getLogger("gradus.serving.access")



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

