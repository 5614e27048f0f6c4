"""The hand-written baseline: the FastAPI app a team writes to serve a model, for bench/serve.py.

    python -m bench.naive_server --registry DIR [--host 127.0.0.1] [--port 8000] [--variant fp32] [--quiet]

FastAPI with a pydantic body model, a plain `def` endpoint (run in FastAPI's thread pool) that encodes the
items with the model's own preprocessing (serving.model.load_production(...).encode) and calls
session.run once per request, and returns a dict that FastAPI serialises; `uvicorn.run(app, host, port)`
with uvicorn's defaults (one process, access log on) unless --quiet. Same route and bodies as shipyard's
POST /predict ({"records": [...]} or {"texts": [...]}), so the same request bytes serve both.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from serving.inputs import InputError
from serving.model import FP32, LoadedModel, ServingError, load_production


class Records(BaseModel):
    records: list[dict[str, float | str | None]]


class Texts(BaseModel):
    texts: list[str]


def answer(model: LoadedModel, items: Sequence[Any]) -> dict[str, Any]:
    """Encode, run once, and pair each item's probabilities with the labels."""
    try:
        feeds = model.encode(items)
    except InputError as err:
        raise HTTPException(status_code=422, detail=str(err)) from None
    (probabilities,) = model.session.run(["probabilities"], feeds)
    keys = [str(label) for label in model.labels]
    return {
        "model": model.name,
        "version": model.version,
        "predictions": [
            {
                "label": model.labels[int(row.argmax())],
                "probabilities": dict(zip(keys, row.tolist(), strict=True)),
            }
            for row in probabilities
        ],
    }


def create_app(registry: Path, variant: str = FP32) -> FastAPI:
    """The production model behind GET /health and POST /predict (tabular or text models)."""
    model = load_production(registry, variant=variant)
    app = FastAPI(title=f"naive: {model.name}")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "variant": model.variant, "provider": model.provider}

    if model.task == "tabular":

        @app.post("/predict")
        def predict_records(body: Records) -> dict[str, Any]:
            return answer(model, body.records)

    elif model.task == "text":

        @app.post("/predict")
        def predict_texts(body: Texts) -> dict[str, Any]:
            return answer(model, body.texts)

    else:
        raise ServingError(f"the naive baseline serves tabular and text models, not {model.task}")
    return app


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.naive_server", description=__doc__.split("\n")[0])
    parser.add_argument("--registry", type=Path, required=True, help="registry folder (production.json)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--variant", default=FP32, help="fp32 (default) or a published variant")
    parser.add_argument("--quiet", action="store_true", help="no access log (uvicorn: warning level)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    args = parse_args(argv)
    try:
        app = create_app(args.registry, args.variant)
    except ServingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.quiet:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    else:
        uvicorn.run(app, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
