"""HTTP API over the production model: GET /health and POST /predict.

POST /predict takes {"records": [{column: value, ...}, ...]} with the raw feature columns (a single object
in place of the list is one record) and answers {"model", "version", "predictions": [{"label",
"probabilities": {label: p}}]} in record order. A request the model cannot take is answered 400 (body not
JSON) or 422 with {"detail": "<what, naming the record and column>"}, never a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from serving.model import LoadedModel, RecordError, ServingError, load_production

MAX_RECORDS = 10_000
USAGE = '{"records": [{column: value, ...}, ...]} (content-type: application/json)'
EXAMPLE = {"records": [{"mean radius": 14.2, "colour": "red"}]}

logger = logging.getLogger("shipyard.serving")


def create_app(registry: Path, prefer_gpu: bool = True, max_records: int = MAX_RECORDS) -> FastAPI:
    """Load the production model now (a ServingError if there is none) and wrap it in an app."""
    model = load_production(registry, prefer_gpu)
    logger.info(model.describe())
    app = FastAPI(title=f"shipyard: {model.name}", version=model.version)
    app.state.model = model
    app.add_exception_handler(RequestValidationError, _invalid_request)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "model": model.name, "version": model.version, "provider": model.provider}

    @app.post("/predict")
    def predict(body: Annotated[dict[str, Any], Body(examples=[EXAMPLE])]) -> JSONResponse:
        return _predict(model, body, max_records)

    return app


def serve(registry: Path, host: str = "127.0.0.1", port: int = 8000, prefer_gpu: bool = True) -> None:
    """Load the production model, then serve it until interrupted; fails before binding if none loads."""
    import uvicorn

    _show_startup_log()
    app = create_app(registry, prefer_gpu)
    sock = _listen(host, port)
    logger.info("listening on http://%s:%d (Ctrl-C to stop)", host, sock.getsockname()[1])
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C after its graceful shutdown
        uvicorn.Server(config).run(sockets=[sock])
    logger.info("stopped")


def parse_records(body: dict[str, Any], max_records: int = MAX_RECORDS) -> list[Any]:
    """The request's records as a list: a single object is one record; none, or too many, is an error."""
    if "records" not in body:
        raise RecordError(f"expected a body like {USAGE}")
    records = body["records"]
    if isinstance(records, dict):
        records = [records]
    if not isinstance(records, list):
        raise RecordError(f"'records' must be a list of objects, got {type(records).__name__}")
    if not records:
        raise RecordError("'records' is empty")
    if len(records) > max_records:
        raise RecordError(f"{len(records)} records in one request; the limit is {max_records}")
    return records


def _predict(model: LoadedModel, body: dict[str, Any], max_records: int) -> JSONResponse:
    try:
        predictions = model.predict(parse_records(body, max_records))
    except RecordError as err:
        return JSONResponse({"detail": str(err)}, status_code=422)
    except ServingError as err:
        logger.error("predict failed: %s", err)
        return JSONResponse({"detail": str(err)}, status_code=500)
    except Exception:
        logger.exception("predict failed")
        return JSONResponse(
            {"detail": "internal error while predicting (see the server log)"}, status_code=500
        )
    return JSONResponse({"model": model.name, "version": model.version, "predictions": predictions})


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own validation errors as one readable line, like ours."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    if any(error.get("type") == "json_invalid" for error in errors):
        return JSONResponse({"detail": "request body is not valid JSON"}, status_code=400)
    if any(tuple(error.get("loc", ())) == ("body",) for error in errors):
        return JSONResponse({"detail": f"the body must be a JSON object like {USAGE}"}, status_code=422)
    detail = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in errors)
    return JSONResponse({"detail": detail or "invalid request"}, status_code=422)


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
