"""The inference server: Open Inference Protocol v2 (what KServe and Triton speak) and a friendly /predict.

Routes (OpenAPI at /openapi.json, docs at /docs):
- OIP v2: GET /v2, /v2/health/live, /v2/health/ready, /v2/models/{name}[/versions/{version}],
  .../ready, .../config (Triton's model config, for tritonclient), POST .../infer with JSON tensors or the
  binary tensor data extension. Errors are {"error": "..."}.
- POST /v1/models/{name}/predict and POST /predict (the production model) take raw items, what the model's
  family takes (content-type application/json unless said):
  tabular {"records": [{column: value, ...}, ...]}; image {"images": [base64 PNG/JPEG, data URL or nested
  0-255 lists, ...]} or one raw image/png or image/jpeg body; text {"texts": ["...", ...]}. They answer
  {"model", "version", "predictions": [{"label", "probabilities": {label: p}}]} in item order; errors are
  {"detail": ...}.
- GET /health (name, version, task, variant, active provider), GET /metrics (Prometheus text).

Every inference request is parsed on the event loop, queued for the model's batcher (serving/batching.py),
run in a batch with whatever else is waiting, and answered with orjson. Limits: body size (413, chunked
bodies too), queue length and per-request timeout (503 with Retry-After), content type (415), malformed input
(400 or 422 naming the input); an API key, when set, guards the inference routes (401). No response carries
a traceback. With `validate_inputs`, /predict first checks items against the model's published data
contract (serving/contract.py): a critical violation is a 422 naming row, column and rule.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import contextlib
import copy
import importlib.metadata
import io
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving import oip
from serving.batching import BatchTimeout
from serving.contract import CRITICAL, InputContract
from serving.inputs import IMAGE_TYPES, USAGE, InputError, UnsupportedMediaType, media_type, read_request
from serving.lifecycle import Served, ServerState, ServeSettings
from serving.metrics import Metrics, RequestCounter
from serving.model import PROBABILITIES, LoadedModel, ServingError

SERVER_VERSION = importlib.metadata.version("shipyard")
MAX_DETAIL = 100  # violations listed in one 422 (all are counted in /metrics)
OIP_TYPES = ("application/json", "application/octet-stream", "")
DESCRIPTIONS = {
    "tabular": "Classify table rows given as raw feature columns; one object is one record.",
    "image": "Classify images: base64 PNG/JPEG, data URLs or nested lists of 0-255 integers, or one raw "
    "image/png or image/jpeg body. Images are converted and resized to the model's size as at ingest.",
    "text": "Classify texts, tokenized with the model's own tokenizer; one string is one text.",
}

logger = logging.getLogger("shipyard.serving")
ModelName = tuple[str, str | None]  # the name and (when the route has one) the version a request names


class BodyTooLarge(InputError):
    status = 413


class Unauthorised(InputError):
    status = 401


class NotFound(InputError):
    status = 404


class ContractViolations(InputError):
    """Critical data-contract violations: a 422 listing them."""

    def __init__(self, detail: list[dict[str, Any]], count: int) -> None:
        super().__init__(f"{count} data contract violations")
        self.detail, self.count = detail, count


def create_app(registry: Path, settings: ServeSettings | None = None) -> FastAPI:
    """Load and warm the production model now (a ServingError if it cannot) and wrap it in an app."""
    settings = settings or ServeSettings()
    metrics = Metrics()
    state = ServerState(registry, settings, metrics)
    model = state.current.model

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.current.batcher.start()
        reloader = asyncio.create_task(state.reload_forever()) if settings.reload_interval > 0 else None
        yield
        if reloader is not None:
            reloader.cancel()
        await asyncio.to_thread(state.close)

    app = FastAPI(title=f"shipyard: {model.name}", version=model.version, lifespan=lifespan)
    app.state.shipyard = state
    app.add_exception_handler(StarletteHTTPException, http_error)
    add_predict_routes(app, state)  # inference routes first: the router tries routes in order
    add_oip_routes(app, state)
    add_service_routes(app, state)
    app.add_middleware(RequestCounter, metrics=metrics)
    return app


# ---- routes


def add_service_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/health", description="The model being served: name, version, task, variant, provider.")
    async def health() -> dict[str, Any]:
        model = state.current.model
        return {
            "status": "draining" if state.draining else "ok",
            "model": model.name,
            "version": model.version,
            "task": model.task,
            "variant": model.variant,
            "provider": model.provider,
            "validate_inputs": state.current.contract is not None,
        }

    @app.get("/metrics", response_class=Response, description="Prometheus metrics, text format.")
    async def prometheus_metrics() -> Response:
        body, content_type = state.metrics.exposition()
        return Response(body, media_type=content_type)


def add_oip_routes(app: FastAPI, state: ServerState) -> None:
    """The Open Inference Protocol v2 REST routes (and Triton's model config)."""

    @app.get("/v2", description="Server metadata (OIP v2).")
    async def server_metadata() -> Response:
        return json_response(oip.server_metadata("shipyard", SERVER_VERSION, [oip.BINARY_EXTENSION]))

    @app.get("/v2/health/live", description="200 while the process runs.")
    async def live() -> Response:
        return json_response({"live": True})

    @app.get("/v2/health/ready", description="200 when a model is loaded and warm; 503 while draining.")
    async def ready() -> Response:
        return json_response({"ready": not state.draining}, 503 if state.draining else 200)

    for versioned in (False, True):
        add_model_routes(app, state, versioned)


def add_model_routes(app: FastAPI, state: ServerState, versioned: bool) -> None:
    """/v2/models/{name}[/versions/{version}]: metadata, ready, config and infer."""
    prefix = "/v2/models/{name}" + ("/versions/{version}" if versioned else "")
    if versioned:

        async def named(name: str, version: str) -> ModelName:
            return name, version
    else:

        async def named(name: str) -> ModelName:
            return name, None

    route = Depends(named)  # the model (and version) a route names

    @app.post(f"{prefix}/infer", description=INFER_DOC, openapi_extra=infer_body_doc(state.current))
    async def infer(request: Request, model: ModelName = route) -> Response:
        return await answer(request, state, OipRequest(state, *model))

    @app.get(prefix, description="Model metadata: versions, platform, inputs and outputs.")
    async def model_metadata(model: ModelName = route) -> Response:
        return with_model(state, *model, metadata_of)

    @app.get(f"{prefix}/ready", description="200 when this model is ready; 503 while draining.")
    async def model_ready(model: ModelName = route) -> Response:
        ready = {"name": model[0], "ready": not state.draining}
        return with_model(state, *model, lambda _: json_response(ready, 503 if state.draining else 200))

    @app.get(f"{prefix}/config", description="The model's Triton-style configuration.")
    async def model_config(model: ModelName = route) -> Response:
        return with_model(state, *model, lambda served: json_response(config_of(served, state)))


def add_predict_routes(app: FastAPI, state: ServerState) -> None:
    model = state.current.model
    doc = f"{DESCRIPTIONS[model.task]} Body: {USAGE[model.task]}."

    @app.post("/predict", description=f"The production model. {doc}", openapi_extra=request_body_doc(model))
    async def predict(request: Request) -> Response:
        return await answer(request, state, PredictRequest(state, None))

    @app.post("/v1/models/{name}/predict", description=doc, openapi_extra=request_body_doc(model))
    async def predict_named(request: Request, name: str) -> Response:
        return await answer(request, state, PredictRequest(state, name))


# ---- the inference path, shared by both protocols


class InferenceRequest(abc.ABC):
    """How one kind of inference request is read, answered and refused (one object per request)."""

    def __init__(self, state: ServerState, name: str | None, version: str | None = None) -> None:
        self.state, self.name, self.version = state, name, version

    @abc.abstractmethod
    def check_content_type(self, content_type: str) -> None: ...

    @abc.abstractmethod
    async def parse(self, served: Served, request: Request, body: bytes) -> dict[str, np.ndarray]: ...

    @abc.abstractmethod
    def render(self, served: Served, outputs: dict[str, np.ndarray]) -> Response: ...

    @abc.abstractmethod
    def refuse(self, status: int, message: str) -> Response: ...


async def answer(request: Request, state: ServerState, protocol: InferenceRequest) -> Response:
    """Authorise, read, parse, queue, run, render: every inference request takes this path."""
    arrived = time.perf_counter()
    settings = state.settings
    served = state.acquire()
    batcher = served.batcher
    batcher.arriving += 1
    parsing = True
    try:
        if not settings.authorised(request.headers.get("authorization")):
            raise Unauthorised("missing or wrong API key: send the header 'Authorization: Bearer <key>'")
        find_model(served, protocol.name, protocol.version)
        protocol.check_content_type(media_type(request.headers.get("content-type")))
        body = await read_body(request, settings.max_body)
        started = time.perf_counter()
        inputs = await protocol.parse(served, request, body)
        parsed = time.perf_counter()
        parsing = False  # run() uncounts it once the request is queued
        try:
            outputs = await batcher.run(inputs, settings.timeout - (parsed - arrived), arriving=True)
        except BatchTimeout:
            raise BatchTimeout(f"no answer within the request timeout of {settings.timeout:g} s") from None
        ran = time.perf_counter()
        response = protocol.render(served, outputs)
        state.metrics.count_request(parsed - started, time.perf_counter() - ran)
        return response
    except ContractViolations as err:
        return JSONResponse({"detail": err.detail, "violations": err.count}, status_code=422)
    except InputError as err:
        message = str(err) if served.contract is None else served.contract.redact(str(err))
        return with_auth_headers(protocol.refuse(err.status, message), err.status)
    except ServingError as err:
        logger.error("inference failed: %s", err)
        return protocol.refuse(500, str(err))
    except Exception:
        logger.exception("inference failed")
        return protocol.refuse(500, "internal error while predicting (see the server log)")
    finally:
        if parsing:
            batcher.arriving -= 1
        state.release(served)


class PredictRequest(InferenceRequest):
    """POST /predict and /v1/models/{name}/predict: raw records, texts or images in, labels out."""

    def check_content_type(self, content_type: str) -> None:
        pass  # read_request answers 415 naming what the family takes

    async def parse(self, served: Served, request: Request, body: bytes) -> dict[str, np.ndarray]:
        model = served.model
        content_type, limit = request.headers.get("content-type"), self.state.settings.max_items
        items = read_request(model.task, content_type, body, limit)
        if served.contract is not None:
            judge_inputs(served.contract, items, self.state.metrics)
        if model.task == "image":  # decoding images is CPU work: keep it off the event loop
            return await asyncio.to_thread(model.encode, items)
        return model.encode(items)

    def render(self, served: Served, outputs: dict[str, np.ndarray]) -> Response:
        model = served.model
        predictions = model.predictions(outputs[PROBABILITIES])
        body = orjson.dumps({"model": model.name, "version": model.version, "predictions": predictions})
        return Response(body, media_type="application/json")

    def refuse(self, status: int, message: str) -> Response:
        return json_response({"detail": message}, status)


class OipRequest(InferenceRequest):
    """POST /v2/models/{name}[/versions/{version}]/infer: named tensors in and out (JSON or binary)."""

    def check_content_type(self, content_type: str) -> None:
        if content_type not in OIP_TYPES and not content_type.endswith("+json"):
            raise UnsupportedMediaType(
                f"content-type '{content_type}' is not supported; send application/json (or "
                "application/octet-stream with Inference-Header-Content-Length for binary tensors)"
            )

    async def parse(self, served: Served, request: Request, body: bytes) -> dict[str, np.ndarray]:
        header = request.headers.get(oip.HEADER_LENGTH)
        tabular = served.model.task == "tabular"  # NaN is a missing value, imputed inside the graph
        self.request = oip.parse_infer_request(
            body,
            header,
            served.inputs,
            served.outputs,
            max_bytes=self.state.settings.max_body,
            allow_nan=tabular,
        )
        if served.model.tokenizer is not None:
            check_token_ids(
                self.request.tensors, served.model.tokenizer.get_vocab_size(with_added_tokens=True)
            )
        return self.request.tensors

    def render(self, served: Served, outputs: dict[str, np.ndarray]) -> Response:
        model = served.model
        content, headers = oip.encode_infer_response(
            model.name,
            model.version,
            self.request.id,
            outputs,
            self.request.outputs,
            self.request.binary_output_default,
        )
        return Response(content, headers=headers)

    def refuse(self, status: int, message: str) -> Response:
        return oip_error(status, message)


def check_token_ids(tensors: dict[str, np.ndarray], vocabulary: int) -> None:
    """Token ids within the tokenizer's vocabulary and a 0/1 attention mask, or a 400 naming the position."""
    checks = {"input_ids": (0, vocabulary - 1), "attention_mask": (0, 1)}
    for name, (low, high) in checks.items():
        bad = np.argwhere((tensors[name] < low) | (tensors[name] > high))
        if bad.size:
            position = [int(i) for i in bad[0]]
            value = int(tensors[name][tuple(position)])
            raise oip.OipError(f"input '{name}' has {value} at index {position}; expected {low} to {high}")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused (413) as soon as it passes `limit` bytes, declared or streamed."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body of {int(declared):,} bytes is over the limit of {limit:,} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body is over the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def find_model(served: Served, name: str | None, version: str | None) -> None:
    """404 unless the request names the model served (and its version, when it names one)."""
    model = served.model
    if name is not None and name != model.name:
        raise NotFound(f"no model named '{name}'; this server serves '{model.name}'")
    if version is not None and version != model.version:
        raise NotFound(f"model '{model.name}' has no version '{version}' loaded; serving '{model.version}'")


def with_model(
    state: ServerState, name: str, version: str | None, respond: Callable[[Served], Response]
) -> Response:
    """`respond` for the served model, or the OIP 404 when the request names another model or version."""
    served = state.current
    try:
        find_model(served, name, version)
    except NotFound as err:
        return oip_error(err.status, str(err))
    return respond(served)


def judge_inputs(contract: InputContract, items: list[Any], metrics: Metrics) -> None:
    """Count the items' contract violations; ContractViolations when one is critical."""
    violations = contract.check(items)
    if not violations:
        return
    metrics.count_violations((v.column, v.rule, v.severity) for v in violations)
    critical = [v for v in violations if v.severity == CRITICAL]
    if critical:
        shown = critical + [v for v in violations if v.severity != CRITICAL]
        raise ContractViolations([v.detail() for v in shown[:MAX_DETAIL]], len(violations))


# ---- responses and documents


def json_response(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """Routing errors (404, 405) in each protocol's shape: {"error"} under /v2, {"detail"} elsewhere."""
    if request.url.path.startswith("/v2"):
        response = oip_error(exc.status_code, str(exc.detail))
    else:
        response = json_response({"detail": exc.detail}, exc.status_code)
    response.headers.update(exc.headers or {})  # 405 keeps its Allow header
    return response


def oip_error(status: int, message: str) -> Response:
    return Response(oip.error_body(message), status_code=status, media_type="application/json")


def with_auth_headers(response: Response, status: int) -> Response:
    """401 says how to authenticate; 503 says when to come back."""
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    elif status == 503:
        response.headers["Retry-After"] = "1"
    return response


def metadata_of(served: Served) -> Response:
    model = served.model
    return json_response(
        oip.model_metadata(model.name, [model.version], "onnxruntime_onnx", served.inputs, served.outputs)
    )


def config_of(served: Served, state: ServerState) -> dict[str, Any]:
    """Triton's model configuration (GET .../config), as tritonclient's get_model_config reads it."""

    def tensors(specs: list[oip.TensorSpec]) -> list[dict[str, Any]]:
        return [{"name": s.name, "data_type": f"TYPE_{s.datatype}", "dims": s.shape[1:]} for s in specs]

    batch = state.settings.batch
    return {
        "name": served.model.name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": batch.max_batch,
        "input": tensors(served.inputs),
        "output": tensors(served.outputs),
        "dynamic_batching": {"max_queue_delay_microseconds": int(batch.max_wait * 1e6)},
        "parameters": {
            "variant": {"string_value": served.model.variant},
            "execution_provider": {"string_value": served.model.provider},
        },
    }


INFER_DOC = (
    'Run the model on named tensors (Open Inference Protocol v2). JSON: {"inputs": [{"name", '
    '"shape", "datatype", "data"}], "outputs": [{"name"}]}. Binary tensor data extension: the JSON header '
    "(its length in the Inference-Header-Content-Length header) followed by each input's raw bytes, "
    'with "parameters": {"binary_data_size": n}; ask for binary outputs with "binary_data": true.'
)
INFER_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "inputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "shape", "datatype"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "shape": {"type": "array", "items": {"type": "integer"}},
                                    "datatype": {"type": "string"},
                                    "data": {"type": "array"},
                                    "parameters": {"type": "object"},
                                },
                            },
                        },
                        "outputs": {"type": "array", "items": {"type": "object"}},
                        "parameters": {"type": "object"},
                    },
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def infer_body_doc(served: Served) -> dict[str, Any]:
    """The infer request body's schema, with an example this model answers (one warm-up row as JSON)."""
    model = served.model
    example = {
        "inputs": [
            {
                "name": name,
                "shape": list(value.shape),
                "datatype": oip.oip_datatype(value.dtype),
                "data": value.ravel().tolist(),
            }
            for name, value in model.encode(model.example_items(1)).items()
        ]
    }
    doc = copy.deepcopy(INFER_SCHEMA)
    doc["requestBody"]["content"]["application/json"]["example"] = example
    return doc


def request_body_doc(model: LoadedModel) -> dict[str, Any]:
    """OpenAPI's request body for this model's family, with an example that this model accepts."""
    content: dict[str, Any] = {
        "application/json": {"schema": {"type": "object"}, "example": example_body(model)}
    }
    if model.task == "image":
        content.update({media: {"schema": {"type": "string", "format": "binary"}} for media in IMAGE_TYPES})
    return {"requestBody": {"required": True, "content": content}}


def example_body(model: LoadedModel) -> dict[str, Any]:
    """A request this model answers: its own columns, a black image of its size, or two texts."""
    if model.task == "image" and model.image is not None:
        mode = "L" if model.image.channels == 1 else "RGB"
        buffer = io.BytesIO()
        Image.new(mode, (model.image.width, model.image.height)).save(buffer, format="PNG")
        return {"images": [base64.b64encode(buffer.getvalue()).decode("ascii")]}
    if model.task == "text":
        return {"texts": ["the first text to classify", "and a second one"]}
    if model.spec is None:
        return {"records": [{}]}
    record: dict[str, Any] = {f.name: float(np.round(f.mean, 3)) for f in model.spec.numeric}
    record.update({f.name: f.categories[0] if f.categories else None for f in model.spec.categorical})
    return {"records": [record]}


# ---- running it


class DrainingServer(uvicorn.Server):
    """uvicorn, except that SIGTERM/SIGINT first turns ready to 503 for `drain_seconds` while requests are
    still served, then stops accepting and lets in-flight requests finish; a second signal stops at once."""

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state
        self.drain_until: float | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.drain_until is not None:
            self.should_exit = self.force_exit = True
            return
        self.state.draining = True
        self.drain_until = time.monotonic() + self.state.settings.drain_seconds
        seconds = self.state.settings.drain_seconds
        logger.info("draining: ready answers 503 for %g s, then in-flight requests finish", seconds)

    async def on_tick(self, counter: int) -> bool:
        if self.drain_until is not None and time.monotonic() >= self.drain_until:
            self.should_exit = True
        return await super().on_tick(counter)


def serve(
    registry: Path, settings: ServeSettings | None = None, host: str = "127.0.0.1", port: int = 8000
) -> None:
    """Load and warm the production model, then serve it until SIGTERM/SIGINT; fails before binding."""
    show_startup_log()
    app = create_app(registry, settings)
    sock = listen(host, port)
    logger.info("listening on http://%s:%d (Ctrl-C to stop)", host, sock.getsockname()[1])
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    DrainingServer(config, app.state.shipyard).run(sockets=[sock])
    logger.info("stopped")


def listen(host: str, port: int) -> socket.socket:
    """Bind now, so a taken port is a clear error and port 0 reports the port it got."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as err:
        raise ServingError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def show_startup_log() -> None:
    """Make the start-up lines visible when nobody configured logging (uvicorn runs at warning level)."""
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
