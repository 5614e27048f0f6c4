"""The Prefect flow: one task per dvc.yaml stage, in order; unchanged stages finish as "Skipped"."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, task
from prefect.states import Completed, Failed, State

from flows import stages
from tasks.errors import ShipyardError

IO_STAGES = {"default_data", "ingest", "promote"}  # may hit flaky storage: retried


def retry_on_io_error(task: Any, task_run: Any, state: State) -> bool:
    try:
        state.result()
    except OSError:
        return True
    except Exception:
        return False
    return False


@task(task_run_name="{name}", retries=0)
def stage(name: str, resume: bool = False) -> State:
    """Run one stage unless DVC says it is up to date; record it in dvc.lock when it ran."""
    if stages.is_up_to_date(name):
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
    results = []
    for name in stages.STAGES:
        options = {"retries": 2, "retry_delay_seconds": 1, "retry_condition_fn": retry_on_io_error}
        runner = stage.with_options(**options) if name in IO_STAGES else stage
        state = runner(name, resume=resume, return_state=True)
        if state.is_failed():
            return Failed(message=state.message, data=results)
        results.append(state.result())
    return results
