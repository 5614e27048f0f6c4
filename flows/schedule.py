"""Scheduled, unattended runs: a deployment of the pipeline on a Prefect process work pool.

Why a process work pool and not `flow.serve`: `shipyard schedule` and `shipyard worker` are separate
commands, so the deployment must live on the server on its own (created, listed, updated and deleted
without a serving process) and a restarted worker must pick up every deployment of the pool without
re-creating it. `serve` owns its deployments and re-applies them at start; a work pool does neither.
Each deployment pins the project folder as the worker's `working_dir`, so runs happen in place (DVC's
cache, dvc.lock and the registry are the project's) instead of in a temporary copy.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from flows.console import exit_code_of
from flows.pipeline import pipeline

FLOW_NAME = "shipyard-scheduled"
POOL = "shipyard"
NO_CHANGES = "no changes since the last successful run: nothing retrained"


@flow(name=FLOW_NAME, log_prints=True)
def scheduled_pipeline(overrides: list[str] | None = None) -> State:
    """One unattended run: apply the deployment's --set overrides, run the pipeline, notify on failure.

    A run whose data and params are unchanged finishes as "No changes" (every stage skipped by DVC's
    content hashes); a failed or not-blessed run POSTs a message to params' notify.webhook_url.
    """
    from tasks.config import PARAMS_FILE, apply_overrides, parse_assignment
    from tasks.errors import ShipyardError

    previous = PARAMS_FILE.read_bytes() if PARAMS_FILE.exists() else None
    try:
        apply_overrides(PARAMS_FILE, [parse_assignment(text) for text in overrides or []])
    except ShipyardError as err:
        return fail_and_notify(str(err), 1)
    state = pipeline(return_state=True)
    if state.is_failed():
        restore_params(previous)
        return fail_and_notify(state.message or "the pipeline failed", exit_code_of(state))
    return summarize(state.result())


def summarize(results: list[dict[str, Any]]) -> State:
    """'No changes' when DVC skipped every stage, else the stages that ran."""
    ran = [r["stage"] for r in results if not r.get("skipped")]
    if not ran:
        get_run_logger().info(NO_CHANGES)
        return Completed(name="No changes", message=NO_CHANGES, data=results)
    return Completed(message=f"ran: {', '.join(ran)}", data=results)


def restore_params(previous: bytes | None) -> None:
    """A failed run leaves params.yaml as it found it, as `shipyard run` does."""
    from tasks.config import PARAMS_FILE
    from tasks.io import write_bytes

    if previous is not None and PARAMS_FILE.read_bytes() != previous:
        write_bytes(PARAMS_FILE, previous)


def fail_and_notify(reason: str, exit_code: int) -> State:
    """The run's Failed state, after a best-effort webhook message (never changes the outcome)."""
    from tasks import notify

    status = notify.run_status(exit_code)
    url = webhook_url()
    if url:
        message = notify.build_message(
            run_name=str(flow_run.get_name()),
            run_id=str(flow_run.get_id()),
            status=status,
            reason=reason,
            model_version=current_model_version(),
        )
        if notify.post_json(url, message):
            get_run_logger().info("failure notification sent to %s", url)
    return Failed(message=f"{status}: {reason}", data={"exit_code": exit_code, "status": status})


def webhook_url() -> str | None:
    """params.yaml's notify.webhook_url, read leniently: a broken params file must not stop the alert."""
    from tasks.config import PARAMS_FILE, read_yaml

    try:
        section = read_yaml(PARAMS_FILE).get("notify") or {}
    except Exception:  # the failure being reported may be this very file
        return None
    return section.get("webhook_url") if isinstance(section, dict) else None


def current_model_version() -> str | None:
    """The production version the failed run leaves in place (None before the first promotion)."""
    from tasks.config import PARAMS_FILE, read_yaml
    from tasks.registry import production_version

    try:
        registry = (read_yaml(PARAMS_FILE).get("promote") or {}).get("registry", "registry")
        return production_version(registry)
    except Exception:
        logging.getLogger("shipyard").debug("no production version readable", exc_info=True)
        return None


def build_deployment(
    name: str, cron: str | None, interval: float | None, overrides: list[str], project: Path
) -> Any:
    """The scheduled flow as a process-pool deployment that runs in `project`; ValueError: bad schedule."""
    check_schedule(cron, interval)
    return scheduled_pipeline.to_deployment(
        name=name,
        cron=cron,
        interval=interval,
        parameters={"overrides": overrides},
        job_variables={"working_dir": str(project.resolve())},
        description=f"shipyard pipeline in {project.resolve()}",
    )


def check_schedule(cron: str | None, interval: float | None) -> None:
    """Prefect's own schedule models decide what a valid cron is; an interval must be positive."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    if cron is not None:
        try:
            CronSchedule(cron=cron)
        except ValidationError as err:
            raise ValueError(err.errors()[0]["msg"].removeprefix("Value error, ")) from None
    if interval is not None and not interval > 0:
        raise ValueError("must be a positive number of seconds")


def apply_deployment(deployment: Any, pool: str = POOL) -> str:
    """Create or update (same flow and name) the deployment; the pool is created on first use."""
    ensure_pool(pool)
    return str(deployment.apply(work_pool_name=pool))


def ensure_pool(pool: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # a concurrent `schedule` made it first
                client.create_work_pool(WorkPoolCreate(name=pool, type="process"))


def list_deployments() -> list[dict[str, Any]]:
    """Each scheduled deployment: name, schedules as text, next scheduled run (None if none yet)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import DeploymentSort

    with get_client(sync_client=True) as client:
        deployments = client.read_deployments(  # limit and sort given: the sync client sends null otherwise
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
            sort=DeploymentSort.NAME_ASC,
            limit=200,
        )
        return [
            {
                "name": d.name,
                "schedules": [describe_schedule(s.schedule) for s in d.schedules],
                "active": not d.paused,
                "parameters": d.parameters,
                "next_run": next_run(client, d.id),
                "path": (d.job_variables or {}).get("working_dir"),
            }
            for d in deployments
        ]


def describe_schedule(schedule: Any) -> str:
    if getattr(schedule, "cron", None):
        return f"cron {schedule.cron}"
    if getattr(schedule, "interval", None):
        return f"every {schedule.interval.total_seconds():g} s"
    return str(schedule)


def next_run(client: Any, deployment_id: Any) -> Any:
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
        ),
        sort=FlowRunSort.EXPECTED_START_TIME_ASC,
        limit=1,
    )
    return runs[0].expected_start_time if runs else None


def delete_deployment(name: str) -> bool:
    """False when no deployment of that name exists."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(f"{FLOW_NAME}/{name}")
        except ObjectNotFound:
            return False
        client.delete_deployment(deployment.id)
        return True


def run_worker(pool: str = POOL, run_once: bool = False) -> None:
    """A process worker on the pool: each run is a subprocess in its deployment's project folder.

    `run_once` polls once, runs what is due and waits for it (tests, cron-driven hosts).
    """
    import asyncio

    from prefect.workers.process import ProcessWorker

    ensure_pool(pool)
    asyncio.run(ProcessWorker(work_pool_name=pool).start(run_once=run_once))
