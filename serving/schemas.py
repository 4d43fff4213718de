"""The service's request and answer schemas (/v1 and the Open Inference Protocol v2), the v2 body parser
(JSON or the binary tensor data extension) and the documented error bodies."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import HTTPException
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

CLIENT_GONE = 499  # nginx's code for "client closed the request": nothing is sent, it is only counted



class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(_Strict):
    texts: list[StrictStr] = Field(min_length=1, description="the texts to classify")
    key: StrictStr | None = Field(None, description="routing key: the same key always reaches the same version")
    scores: StrictBool = Field(False, description="also answer every label's score per text")


class Score(BaseModel):
    label: str
    score: float


class Prediction(BaseModel):
    """One label per text (model.task classification): the most probable label and the top_k."""

    label: str
    confidence: float
    top_k: list[Score]
    scores: dict[str, float] | None = Field(None, description="every label's probability (when asked)")


class LabelSetPrediction(BaseModel):
    """A label set per text (model.task multi_label): the labels whose sigmoid score reaches their threshold (the
    decision stored with the model), by falling score; none when no label applies."""

    labels: list[Score]
    scores: dict[str, float] | None = Field(None, description="every label's sigmoid score (when asked)")


class Entity(BaseModel):
    """One entity found in a text: its type, its character offsets into the text as sent (end exclusive; Python
    string indices, i.e. Unicode code points), the text there and a score (the mean of its words' tag
    probabilities)."""

    type: str
    start: int
    end: int
    text: str
    score: float


class EntityPrediction(BaseModel):
    """Entities per text (model.task token_classification): sub-word tokens merged into words (each word's tag
    is its first sub-token's, averaged over the windows holding it) and words into spans (B-x I-x ...)."""

    entities: list[Entity]


class EntityIn(_Strict):
    start: int = Field(ge=0, description="character offset of the entity's first character in the text")
    end: int = Field(gt=0, description="character offset just past its last character")
    type: StrictStr = Field(min_length=1)


class ModelRef(BaseModel):
    version: str | None
    alias: str


class PredictResponse(BaseModel):
    request_id: str
    model: ModelRef
    predictions: list[Prediction | LabelSetPrediction | EntityPrediction]


class FeedbackRequest(_Strict):
    label: StrictStr | None = Field(None, min_length=1, description="the right label (one label per text)")
    labels: list[StrictStr] | None = Field(None, description="the right labels (a label set per text; [] for none)")
    entities: list[EntityIn] | None = Field(None, description="the right entities (entity extraction; [] for none)")
    request_id: StrictStr | None = Field(None, description="a request this service answered ...")
    index: int = Field(0, ge=0, description="... and which of its texts (0 = the first)")
    text: StrictStr | None = Field(None, description="or the text itself")

    @model_validator(mode="after")
    def _one_reference(self) -> FeedbackRequest:
        if (self.request_id is None) == (self.text is None):
            raise ValueError("give exactly one of request_id (with index) or text")
        if sum(value is not None for value in (self.label, self.labels, self.entities)) != 1:
            raise ValueError("give exactly one of label (one label per text), labels (a label set) or entities "
                             "(entity extraction)")
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
    label: str | list[str] | list[dict[str, Any]]
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
