"""Expected failures (bad data, bad config, gate not passed) and how a stage's main() reports them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps


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

    return wrapper
