"""The Prefect flow: one task per dvc.yaml stage, in order; unchanged stages finish as "Skipped"."""

from __future__ import annotations

import logging
import time
from typing import Any

from prefect import flow, task
from prefect.states import Completed, Failed, State

from flows import cache_check, stages
from tasks.errors import ShipyardError

RETRIED = {"default_data", "ingest", "train", "promote"}  # flaky storage; a killed training process


def retry_on_transient_error(task: Any, task_run: Any, state: State) -> bool:
    try:
        state.result()
    except (OSError, stages.StageKilled):
        return True
    except Exception:
        return False
    return False


@task(task_run_name="{name}", retries=0)
def stage(name: str, stale: bool, recheck: bool, resume: bool = False) -> State:
    """Run one stage unless DVC says it is up to date; record it in dvc.lock when it ran.

    `stale` is DVC's verdict from the start of the run; once an upstream stage has run (`recheck`),
    DVC is asked again, since a stage's inputs may have changed under it.
    """
    from prefect.runtime import task_run

    up_to_date = stages.is_up_to_date(name) if recheck else not stale
    resume = resume or task_run.run_count > 1  # a retried training continues from its last checkpoint
    if up_to_date:
        return Completed(name="Skipped", message=f"{name}: unchanged", data={"stage": name, "skipped": True})
    started = time.perf_counter()
    try:
        stages.run_stage(name, resume=resume)
    except ShipyardError as err:
        return Failed(message=f"{name}: {err}", data={"stage": name, "exit_code": err.exit_code})
    stages.record(name)
    seconds = time.perf_counter() - started
    return Completed(
        message=f"{name}: ran in {seconds:.2f} s", data={"stage": name, "skipped": False, "seconds": seconds}
    )


@flow(name="shipyard-pipeline", log_prints=True)
def pipeline(resume: bool = False) -> list[dict[str, Any]]:
    """ingest → validate → train → evaluate → export → promote, as in dvc.yaml."""
    stages.check_layout()
    logging.getLogger("shipyard").setLevel(logging.INFO)  # stage loggers, shown through Prefect's handlers
    try:
        cache_check.check_cache()  # DVC copies cache objects without re-hashing them: stop on a bad one
    except ShipyardError as err:
        return Failed(message=str(err), data={"exit_code": err.exit_code})
    stale = stages.stale_stages()
    results: list[dict[str, Any]] = []
    for name in stages.STAGES:
        options = {"retries": 2, "retry_delay_seconds": 1, "retry_condition_fn": retry_on_transient_error}
        runner = stage.with_options(**options) if name in RETRIED else stage
        recheck = any(not r["skipped"] for r in results)
        state = runner(name, name in stale, recheck, resume=resume, return_state=True)
        if state.is_failed():
            return Failed(message=state.message, data=state.result(raise_on_failure=False))
        results.append(state.result())
    return results
