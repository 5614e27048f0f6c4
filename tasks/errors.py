"""Expected failures (bad data, bad config, gate not passed) and how a stage's main() reports them."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any


class ShipyardError(Exception):
    """A failure the user can act on: printed as one line, never as a traceback."""

    exit_code = 1


class GateFailed(ShipyardError):
    """The model did not pass the blessing gate: kept, not promoted."""

    exit_code = 3


def report_errors(main: Callable[..., None]) -> Callable[..., None]:
    """Wrap a stage's main(): a ShipyardError becomes `error: ...` on stderr and a non-zero exit."""

    @wraps(main)
    def wrapper(*args, **kwargs) -> None:
        try:
            main(*args, **kwargs)
        except ShipyardError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            print("interrupted: nothing was recorded for this stage; run it again", file=sys.stderr)
            sys.exit(130)

    return wrapper


@report_errors
def stage_main(run: Callable[..., Any], params_file: str = "params.yaml", **kwargs: Any) -> None:
    """The body of `python -m tasks.<stage>`: params.yaml in, quiet logs, one-line errors out."""
    from tasks.config import load_params

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    run(load_params(params_file), **kwargs)
