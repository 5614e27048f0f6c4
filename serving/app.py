"""HTTP API over the production model: GET /health and POST /predict.

POST /predict takes what the model's family takes (content-type: application/json unless said):
- tabular: {"records": [{column: value, ...}, ...]} with the raw feature columns (one object is one record);
- image: {"images": [item, ...]}, an item a base64 PNG/JPEG, a data URL ("data:image/png;base64,...") or a
  nested list of 0-255 integers shaped (H, W) or (H, W, C); or one raw image body (image/png, image/jpeg);
- text: {"texts": ["...", ...]} (one string is one text).
It answers {"model", "version", "predictions": [{"label", "probabilities": {label: p}}]} in item order. A
request the model cannot take is answered 400 (body not JSON), 415 (content type) or 422 with
{"detail": "<what, naming the item>"}, never a traceback. GET /health names the model, version, task,
variant and the provider that is really active; GET /metrics gives Prometheus' text format (requests by route
and status, input-contract violations by column, rule and severity).

With `validate_inputs`, each request is first checked against the data contract published with the model
(serving/contract.py): a critical violation is answered 422 with {"detail": [{"row", "column", "rule",
"expected", "severity"[, "value"]}, ...], "violations": n}, never echoing a sensitive column's value;
warnings are counted and the request answered. Without it, the request path does no contract work at all.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import socket
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from serving.contract import CRITICAL, InputContract, load_input_contract
from serving.inputs import IMAGE_TYPES, USAGE, InputError, read_request
from serving.metrics import Metrics, RequestCounter
from serving.model import FP32, LoadedModel, ServingError, load_production

MAX_RECORDS = 10_000
MAX_DETAIL = 100  # violations listed in one 422 (all are counted in /metrics)
DESCRIPTIONS = {
    "tabular": "Classify table rows given as raw feature columns; one object is one record.",
    "image": "Classify images: base64 PNG/JPEG, data URLs or nested lists of 0-255 integers, or one raw "
    "image/png or image/jpeg body. Images are converted and resized to the model's size as at ingest.",
    "text": "Classify texts, tokenized with the model's own tokenizer; one string is one text.",
}

logger = logging.getLogger("shipyard.serving")


def create_app(
    registry: Path,
    prefer_gpu: bool = True,
    max_records: int = MAX_RECORDS,
    variant: str = FP32,
    validate_inputs: bool = False,
) -> FastAPI:
    """Load the production model now (a ServingError if there is none) and wrap it in an app.

    `validate_inputs` also loads the version's data contract (a ServingError if it has none).
    """
    model = load_production(registry, prefer_gpu, variant)
    contract = load_input_contract(model) if validate_inputs else None
    logger.info(model.describe())
    if contract is not None:
        logger.info(contract.describe())
    metrics = Metrics()
    app = FastAPI(title=f"shipyard: {model.name}", version=model.version)
    app.state.model, app.state.contract, app.state.metrics = model, contract, metrics

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": model.name,
            "version": model.version,
            "task": model.task,
            "variant": model.variant,
            "provider": model.provider,
            "validate_inputs": contract is not None,
        }

    @app.get("/metrics", response_class=Response, description="Prometheus metrics, text format.")
    def prometheus_metrics() -> Response:
        body, media_type = metrics.exposition()
        return Response(body, media_type=media_type)

    @app.post(
        "/predict",
        description=f"{DESCRIPTIONS[model.task]} Body: {USAGE[model.task]}.",
        openapi_extra=request_body_doc(model),
    )
    async def predict(request: Request) -> JSONResponse:
        body = await request.body()
        content_type = request.headers.get("content-type")
        return await run_in_threadpool(
            answer_predict, model, content_type, body, max_records, contract, metrics
        )

    app.add_middleware(RequestCounter, metrics=metrics, routes=[route.path for route in app.routes])
    return app


def serve(
    registry: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    prefer_gpu: bool = True,
    variant: str = FP32,
    validate_inputs: bool = False,
) -> None:
    """Load the production model, then serve it until interrupted; fails before binding if none loads."""
    import uvicorn

    _show_startup_log()
    app = create_app(registry, prefer_gpu, variant=variant, validate_inputs=validate_inputs)
    sock = _listen(host, port)
    logger.info("listening on http://%s:%d (Ctrl-C to stop)", host, sock.getsockname()[1])
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C after its graceful shutdown
        uvicorn.Server(config).run(sockets=[sock])
    logger.info("stopped")


def answer_predict(
    model: LoadedModel,
    content_type: str | None,
    body: bytes,
    max_items: int,
    contract: InputContract | None = None,
    metrics: Metrics | None = None,
) -> JSONResponse:
    """The predictions for one request, or its error as {"detail": ...} with the status it deserves."""
    try:
        items = read_request(model.task, content_type, body, max_items)
        if contract is not None and (refused := judge_inputs(contract, items, metrics)) is not None:
            return refused
        predictions = model.predict(items)
    except InputError as err:
        detail = str(err) if contract is None else contract.redact(str(err))
        return JSONResponse({"detail": detail}, status_code=err.status)
    except ServingError as err:
        logger.error("predict failed: %s", err)
        return JSONResponse({"detail": str(err)}, status_code=500)
    except Exception:
        logger.exception("predict failed")
        return JSONResponse(
            {"detail": "internal error while predicting (see the server log)"}, status_code=500
        )
    return JSONResponse({"model": model.name, "version": model.version, "predictions": predictions})


def judge_inputs(contract: InputContract, items: list[Any], metrics: Metrics | None) -> JSONResponse | None:
    """Count the items' contract violations; a 422 naming them when one is critical, else None."""
    violations = contract.check(items)
    if not violations:
        return None
    if metrics is not None:
        metrics.count_violations((v.column, v.rule, v.severity) for v in violations)
    critical = [v for v in violations if v.severity == CRITICAL]
    if not critical:
        return None
    shown = critical + [v for v in violations if v.severity != CRITICAL]
    detail = [v.detail() for v in shown[:MAX_DETAIL]]
    return JSONResponse({"detail": detail, "violations": len(violations)}, status_code=422)


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


def _listen(host: str, port: int) -> socket.socket:
    """Bind now, so a taken port is a clear error and port 0 reports the port it got."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as err:
        raise ServingError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def _show_startup_log() -> None:
    """Make the start-up lines visible when nobody configured logging (uvicorn runs at warning level)."""
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
