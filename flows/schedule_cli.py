"""`shipyard schedule` (create, update, list, delete scheduled runs) and `shipyard worker` (run them).

Both talk to a long-lived Prefect server (`prefect server start`) named by PREFECT_API_URL; its basic
auth is Prefect's own PREFECT_API_AUTH_STRING ("user:password"), which Prefect's client sends as is.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from flows.console import fail

POOL_HELP = "Prefect process work pool (created on first use)"


def schedule(
    cron: Annotated[str | None, typer.Option(help='cron expression, e.g. "0 3 * * *"')] = None,
    interval: Annotated[float | None, typer.Option(help="run every this many seconds")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="KEY.PATH=VALUE applied before each run")] = [],  # noqa: B006
    name: Annotated[str, typer.Option(help="deployment name (the same name updates it)")] = "scheduled",
    list_: Annotated[bool, typer.Option("--list", help="list the scheduled deployments and exit")] = False,
    delete: Annotated[str | None, typer.Option(help="delete the deployment of this name")] = None,
    pool: Annotated[str, typer.Option(help=POOL_HELP)] = "shipyard",
) -> None:
    """Schedule pipeline runs of this project as a Prefect deployment; `shipyard worker` runs them.

    Exactly one of --cron, --interval, --list, --delete. A run whose data and params are unchanged
    finishes as "No changes"; a failed or not-blessed run notifies params' notify.webhook_url.
    """
    modes = {"--cron": cron is not None, "--interval": interval is not None, "--list": list_}
    modes["--delete"] = delete is not None
    chosen = [flag for flag, given in modes.items() if given]
    if len(chosen) != 1:
        fail(f"give exactly one of --cron, --interval, --list, --delete (got {', '.join(chosen) or 'none'})")
    api_url = require_api_url()
    with prefect_errors(api_url):
        if list_:
            print_deployments()
        elif delete is not None:
            delete_by_name(delete)
        else:
            create_or_update(name, cron, interval, set_, pool)


def create_or_update(name: str, cron: str | None, interval: float | None, sets: list[str], pool: str) -> None:
    from flows.schedule import FLOW_NAME, apply_deployment, build_deployment
    from flows.stages import check_layout
    from tasks.config import PARAMS_FILE, apply_overrides, parse_assignment
    from tasks.errors import ShipyardError

    try:
        check_layout()
        with tempfile.TemporaryDirectory() as scratch:  # validate the --set values now, not at 3 a.m.
            overrides = [parse_assignment(text) for text in sets]
            apply_overrides(PARAMS_FILE, overrides, out=Path(scratch) / "params.yaml")
    except ShipyardError as err:
        fail(str(err))
    try:
        deployment = build_deployment(name, cron, interval, sets, Path.cwd())
    except ValueError as err:
        option = f"--cron {cron!r}" if cron is not None else f"--interval {interval:g}"
        fail(f"{option}: {first_line(err)}")
    deployment_id = apply_deployment(deployment, pool)
    when = f"cron {cron}" if cron is not None else f"every {interval:g} s"
    typer.echo(f"deployment {FLOW_NAME}/{name} ({deployment_id}) scheduled: {when}, pool {pool}")
    typer.echo(f"runs start when a worker serves the pool: shipyard worker --pool {pool}")


def print_deployments() -> None:
    from rich.console import Console
    from rich.table import Table

    from flows.schedule import list_deployments

    rows = list_deployments()
    if not rows:
        typer.echo("no scheduled deployments (create one with shipyard schedule --cron or --interval)")
        return
    table = Table("name", "schedule", "next run", "--set", "project", box=None)
    for row in rows:
        next_run = row["next_run"].isoformat(timespec="seconds") if row["next_run"] else "-"
        schedule = ", ".join(row["schedules"]) + ("" if row["active"] else " (paused)")
        overrides = " ".join((row["parameters"] or {}).get("overrides") or []) or "-"
        table.add_row(row["name"], schedule, next_run, overrides, row["path"] or "-")
    Console(width=200).print(table)


def delete_by_name(name: str) -> None:
    from flows.schedule import FLOW_NAME, delete_deployment

    if not delete_deployment(name):
        fail(f"--delete {name!r}: no deployment {FLOW_NAME}/{name} (see shipyard schedule --list)")
    typer.echo(f"deleted deployment {FLOW_NAME}/{name}")


def worker(
    pool: Annotated[str, typer.Option(help=POOL_HELP)] = "shipyard",
    run_once: Annotated[bool, typer.Option(help="run what is due now, wait for it, and exit")] = False,
) -> None:
    """Run the scheduled deployments of the pool: each run is a subprocess in its project folder."""
    from flows.schedule import run_worker

    api_url = require_api_url()
    with prefect_errors(api_url):
        run_worker(pool, run_once=run_once)


def require_api_url() -> str:
    """Schedules outlive this process, so they need a real server, not the temporary API of `run`."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        fail(
            "PREFECT_API_URL is not set: start `prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    return str(url)


@contextlib.contextmanager
def prefect_errors(api_url: str) -> Iterator[None]:
    """An unreachable server or refused credentials: one line naming the server, no traceback."""
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    try:
        yield
    except httpx.TransportError as err:
        fail(f"Prefect API at {api_url} unreachable ({first_line(err)}); is `prefect server start` running?")
    except PrefectHTTPStatusError as err:
        code = err.response.status_code
        if code in (401, 403):
            fail(f"Prefect API at {api_url} answered {code}: {credentials_problem()}")
        fail(f"Prefect API at {api_url} answered {code}")


def credentials_problem() -> str:
    """Why the server refused us, without ever echoing the credentials themselves."""
    from prefect.settings import get_current_settings

    given = get_current_settings().api.auth_string
    wanted = 'the server\'s PREFECT_SERVER_API_AUTH_STRING ("user:password")'
    if given is None or not given.get_secret_value():
        return f"the server requires basic auth; set PREFECT_API_AUTH_STRING to {wanted}"
    return f"it refused the credentials in PREFECT_API_AUTH_STRING; set it to {wanted}"


def first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
app.command()(schedule)
app.command()(worker)

if __name__ == "__main__":  # `python -m flows.schedule_cli`: the same commands as `shipyard schedule|worker`
    os.environ.setdefault("DO_NOT_TRACK", "1")
    sys.exit(app())
