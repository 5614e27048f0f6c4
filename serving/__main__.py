"""`python -m serving`: the inference server without the `shipyard` CLI (no Prefect, DVC or typer needed).

    python -m serving [--registry DIR] [--params params.yaml] [--host H] [--port P] [--variant V] ...

Every key of params' `serve` section is an option (`--max-batch-size 32`, `--no-validate-inputs`); unset
options come from params.yaml's `serve` section when the file exists, else from the defaults. The API key
comes only from the SHIPYARD_API_KEY environment variable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from serving.app import serve
from serving.lifecycle import ServeSettings
from tasks.config import PARAMS_FILE, Params, ServeParams, load_params
from tasks.errors import ShipyardError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.split("\n")[0])
    parser.add_argument("--registry", type=Path, help="the registry folder (default: promote.registry)")
    parser.add_argument("--params", type=Path, default=PARAMS_FILE, help="params file (default: params.yaml)")
    parser.add_argument("--cpu", action="store_true", help="do not ask for CUDA")
    for name, field in ServeParams.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument(flag, default=None, help=f"default: {field.default}")
    return parser.parse_args(argv)


def start(
    overrides: dict[str, Any],
    registry: Path | None = None,
    params_file: Path = PARAMS_FILE,
    cpu: bool = False,
) -> None:
    """Serve with params' `serve` section (when the file exists) under `overrides`; ShipyardError if bad."""
    params = load_params(params_file) if params_file.is_file() else Params()
    try:
        serve_params = ServeParams.model_validate({**params.serve.model_dump(), **overrides})
    except ValidationError as err:
        raise ShipyardError("; ".join(f"serve.{e['loc'][0]}: {e['msg']}" for e in err.errors())) from None
    settings = ServeSettings.from_params(serve_params, prefer_gpu=not cpu)
    serve(registry or Path(params.promote.registry), settings, serve_params.host, serve_params.port)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {
        name: value for name in ServeParams.model_fields if (value := getattr(args, name)) is not None
    }
    try:
        start(overrides, args.registry, args.params, args.cpu)
    except ShipyardError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
