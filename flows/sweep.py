"""The sweep flow: each candidate a DVC experiment run as a Prefect task on Dask; the best one promoted.

A candidate is `dvc exp run --temp --name <sweep>-<n> --set-param ... evaluate` in a subprocess on a
Dask worker: DVC copies the project into a temporary folder, runs the stages up to evaluate there and
keeps the result as an experiment (a git ref), so `dvc exp show` lists every candidate with its params
and metrics. Two `dvc exp run --temp` in one repository contend for DVC's repository lock while they
set up; without waiting, DVC gives up after 3 s ("Unable to acquire lock": 2 of 4 started together
failed so), so each runs as `dvc --wait-for-lock exp run` (DVC's own option). The run itself holds no
repository lock.

Temporary folders have no registry, so a candidate's blessing did not compare with production. The best
blessed candidate is applied to the workspace (`dvc exp apply`), evaluated again there, then exported and
promoted by the pipeline flow's own stages. If that gate refuses it, the workspace is put back as it was.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.futures import as_completed
from prefect.states import Completed, Failed, State

from flows import pipeline, stages
from flows.console import exit_code_of
from flows.sweep_cli import LOCK, PARAMS
from tasks.io import read_json, write_bytes, write_json

TARGET = "evaluate"  # candidates stop here: export and promote run only for the one promoted
BLESSING = "reports/blessing.json"
METRICS = "reports/metrics.json"
NOISE = ("WARNING: No file hash info found",)  # DVC's note for each out of a stage not yet run


def hydra_value(value: Any) -> str:
    """A value as `dvc exp run --set-param` reads it (Hydra's override grammar): strings always quoted,
    so '1' or 'true' stay strings; in quotes, Hydra reads backslashes literally except before a quote."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", str(value))  # \ before a quote: doubled
    return "'" + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text) + "'"


def candidate_args(name: str, values: dict[str, Any], copy_paths: list[str]) -> list[str]:
    """The dvc arguments of one candidate (after the `dvc` executable)."""
    args = ["--wait-for-lock", "exp", "run", "--temp", "--name", name]
    for path in copy_paths:
        args += ["--copy-paths", path]
    for key, value in values.items():
        args += ["--set-param", f"++{key}={hydra_value(value)}"]  # ++: set, or add a key params.yaml lacks
    return [*args, TARGET]


class CandidateFailed(Exception):
    """`dvc exp run` of a candidate failed; the message is what it said."""


def dvc_executable() -> str:
    """The dvc beside this worker's Python (its virtual environment), else the one on PATH."""
    import shutil

    sibling = Path(sys.executable).with_name("dvc")
    found = str(sibling) if sibling.exists() else shutil.which("dvc")
    if not found:
        raise CandidateFailed(f"{socket.gethostname()}: dvc not found for {sys.executable}")
    return found


def failure_lines(output: str, limit: int = 6) -> str:
    """What a user needs from a failed `dvc exp run`: the stage's `error:` line and DVC's ERROR lines."""
    lines = [line.strip() for line in output.splitlines() if line.strip() and not line.startswith(NOISE)]
    errors = [line for line in lines if line.lower().startswith("error")]
    return " | ".join(dict.fromkeys(errors or lines[-limit:]))


@task(task_run_name="{name}")
def run_candidate(project: str, name: str, args: list[str], threads: int | None) -> dict[str, Any]:
    """One candidate's `dvc exp run --temp`, as a subprocess of whichever Dask worker runs this task."""
    if not Path(project, "dvc.yaml").is_file():
        raise CandidateFailed(
            f"{socket.gethostname()}: no project at {project}; Dask workers must see the project folder "
            "at the same path (a shared file system)"
        )
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # dvc.yaml's `python`
    env.setdefault("DO_NOT_TRACK", "1")
    if threads:  # the local cluster's share of the CPUs for each candidate's torch
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    started = time.time()
    command = [dvc_executable(), *args]
    result = subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    finished = time.time()
    if result.returncode != 0:
        output = result.stdout + "\n" + result.stderr
        raise CandidateFailed(f"dvc exp run exited with code {result.returncode}: {failure_lines(output)}")
    return {
        "started": started,
        "finished": finished,
        "seconds": round(finished - started, 3),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


def experiments_by_name(project: str) -> dict[str, dict[str, Any]]:
    """`dvc exp show --json` of the current baseline: experiment name -> rev, params and metrics."""
    import json

    result = subprocess.run(
        [dvc_executable(), "exp", "show", "--json", "--hide-queued", "--hide-workspace"],
        cwd=project,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise CandidateFailed(f"dvc exp show failed: {failure_lines(result.stdout + result.stderr)}")
    found = {}
    for baseline in json.loads(result.stdout or "[]"):
        for experiment in baseline.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                data = rev.get("data") or {}
                metrics = (data.get("metrics") or {}).get(METRICS, {}).get("data") or {}
                params = (data.get("params") or {}).get(str(PARAMS), {}).get("data") or {}
                found[rev.get("name") or experiment.get("name")] = {
                    "rev": rev["rev"],
                    "metrics": metrics,
                    "params": params,
                }
    return found


def read_blessing(project: str, rev: str) -> dict[str, Any]:
    import json

    import dvc.api

    return json.loads(dvc.api.read(BLESSING, repo=project, rev=rev))


def param_at(params: dict[str, Any], key: str) -> Any:
    node: Any = params
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


@task
def collect(plan: dict[str, Any], outcomes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each candidate's params, metrics and blessing, as DVC recorded its experiment."""
    experiments = experiments_by_name(plan["project"])
    rows = []
    for candidate in plan["candidates"]:
        name, outcome = candidate["name"], outcomes[candidate["name"]]
        row = {"name": name, "values": candidate["values"], **outcome}
        if outcome["status"] == "ok":
            experiment = experiments.get(name)
            if experiment is None:
                row.update(status="failed", error=f"experiment {name} not found by `dvc exp show`")
            else:
                try:
                    blessing = read_blessing(plan["project"], experiment["rev"])
                except Exception as err:  # kept in the table, never promoted
                    blessing = {"blessed": False, "reasons": [f"{BLESSING} unreadable: {err}"]}
                recorded = {key: param_at(experiment["params"], key) for key in candidate["values"]}
                row.update(
                    rev=experiment["rev"],
                    params=recorded,
                    metrics={k: v for k, v in experiment["metrics"].items() if not isinstance(v, dict)},
                    blessed=bool(blessing["blessed"]),
                    reasons=blessing["reasons"],
                )
        rows.append(row)
    return rows


def choose_best(rows: list[dict[str, Any]], metric: str, higher_is_better: bool) -> dict[str, Any] | None:
    """The blessed candidate with the best value of the metric (the first in grid order on a tie)."""
    ok = [r for r in rows if r["status"] == "ok" and r["blessed"]]
    scored = [r for r in ok if r["metrics"].get(metric) is not None]
    if not scored:
        return None
    sign = 1 if higher_is_better else -1
    return max(scored, key=lambda r: (sign * r["metrics"][metric], -rows.index(r)))


def summary_of(plan: dict[str, Any], rows: list[dict[str, Any]], started: float) -> dict[str, Any]:
    best = choose_best(rows, plan["metric"], plan["higher_is_better"])
    return {
        "sweep": plan["sweep_id"],
        "project": plan["project"],
        "metric": plan["metric"],
        "higher_is_better": plan["higher_is_better"],
        "keys": plan["keys"],
        "set": plan["sets"],
        "workers": plan["workers"],
        "address": plan["address"],
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "candidates_seconds": round(time.time() - started, 3),
        "candidates": rows,
        "best": best["name"] if best else None,
        "promoted": None,
        "outcome": "not promoted (--no-promote)" if not plan["promote"] else "promotion pending",
    }


def restyled_params(previous: bytes, plan: dict[str, Any], values: dict[str, Any]) -> None:
    """params.yaml as `dvc exp apply` left it, rewritten in the project's own style (comments, nulls,
    flow lists) from the previous file plus the candidate's values; DVC hashes values, not bytes."""
    import tempfile

    from ruamel.yaml import YAML

    from tasks.config import apply_overrides

    def values_of(path: Path) -> Any:  # YAML 1.2, as DVC reads params (1e-4 is a number)
        return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))

    with tempfile.TemporaryDirectory() as scratch:
        before, after = Path(scratch) / "before.yaml", Path(scratch) / "after.yaml"
        before.write_bytes(previous)
        overrides = [(key.split("."), value) for key, value in {**plan["sets"], **values}.items()]
        apply_overrides(before, overrides, out=after)
        if values_of(after) == values_of(PARAMS):
            write_bytes(PARAMS, after.read_bytes())
        else:
            get_run_logger().warning("params.yaml kept as `dvc exp apply` wrote it (values differ)")


@task
def apply_candidate(plan: dict[str, Any], best: dict[str, Any]) -> None:
    """`dvc exp apply`, checking out what the candidate produced (evaluate and the stages before it)."""
    from dvc.repo import Repo

    previous = PARAMS.read_bytes()
    with Repo(plan["project"]) as repo:
        repo.experiments.apply(best["name"], targets=[TARGET], with_deps=True)
    restyled_params(previous, plan, best["values"])


@task
def restore_workspace(params: bytes, lock: bytes | None) -> None:
    """params.yaml and dvc.lock as before the sweep, and the outputs that dvc.lock names."""
    from dvc.repo import Repo

    write_bytes(PARAMS, params)
    if lock is None:
        LOCK.unlink(missing_ok=True)
    else:
        write_bytes(LOCK, lock)
    with Repo(".") as repo:
        repo.checkout(force=True, allow_missing=True)


def promote_best(plan: dict[str, Any], best: dict[str, Any]) -> State:
    """Apply the best candidate, evaluate it against production, then export and promote it."""
    logger = get_run_logger()
    params, lock = PARAMS.read_bytes(), LOCK.read_bytes() if LOCK.exists() else None
    try:
        apply_candidate(plan, best)
        stages.stale_stages()  # a fresh view of the project after the apply
    except Exception as err:
        state = Failed(message=f"dvc exp apply {best['name']} failed: {err}", data={"exit_code": 1})
    else:
        logger.info("%s applied to the workspace; evaluating it against production", best["name"])
        state = pipeline.stage(TARGET, True, False, return_state=True)
    blessing = read_json(BLESSING) if state.is_completed() else None
    if blessing is not None and not blessing["blessed"]:
        state = Failed(
            message=f"the best candidate {best['name']} is not blessed in the workspace: "
            + "; ".join(blessing["reasons"]),
            data={"exit_code": 3},
        )
    if state.is_completed():
        state = pipeline.pipeline(return_state=True)  # export and promote (the stages before: unchanged)
    if not state.is_completed():
        restore_workspace(params, lock)
        message = (
            f"{state.message}; production untouched, workspace as before "
            f"(`dvc exp apply {best['name']}` to look at it)"
        )
        return Failed(message=message, data={"exit_code": exit_code_of(state)})
    report = read_json("reports/promotion.json")
    return Completed(message=f"{best['name']} promoted as {report['version']}", data=report)


@flow(name="shipyard-sweep", log_prints=True)
def sweep(plan: dict[str, Any]) -> dict[str, Any]:
    """Every candidate as a DVC experiment, in parallel on the Dask task runner; then the best promoted."""
    logger = get_run_logger()
    started = time.time()
    futures = {
        run_candidate.submit(plan["project"], c["name"], c["args"], plan["threads"]): c["name"]
        for c in plan["candidates"]
    }
    outcomes: dict[str, dict[str, Any]] = {}
    for done, future in enumerate(as_completed(list(futures)), 1):
        name = futures[future]
        result = future.result(raise_on_failure=False)
        if isinstance(result, BaseException):
            outcomes[name] = {"status": "failed", "error": str(result)}
            logger.warning("%s failed (%d/%d): %s", name, done, len(futures), result)
        else:
            outcomes[name] = {"status": "ok", "error": None, **result}
            logger.info("%s finished in %.1f s (%d/%d)", name, result["seconds"], done, len(futures))
    rows = collect(plan, outcomes)
    summary = summary_of(plan, rows, started)
    write_json(plan["summary_file"], summary)
    failed = [r for r in rows if r["status"] != "ok"]
    if len(failed) == len(rows):
        message = f"every candidate failed; the first: {failed[0]['error']}"
        return Failed(message=message, data={"exit_code": 1})
    if not plan["promote"]:
        return summary
    best = next((r for r in rows if r["name"] == summary["best"]), None)
    if best is None:
        summary["outcome"] = "no blessed candidate"
        write_json(plan["summary_file"], summary)
        return Failed(
            message="no candidate was blessed; production untouched (their reasons: `dvc exp show`, "
            f"{plan['summary_file']})",
            data={"exit_code": 3},
        )
    state = promote_best(plan, best)
    summary["outcome"] = "promoted" if state.is_completed() else f"not promoted: {state.message}"
    summary["promoted"] = {"candidate": best["name"], **state.data} if state.is_completed() else None
    write_json(plan["summary_file"], summary)
    return summary if state.is_completed() else state


def task_runner(plan: dict[str, Any]) -> Any:
    """A Dask task runner: the scheduler at plan's address, else a local cluster of worker processes
    (one thread each: a candidate is a subprocess; no dashboard, so no port to collide on)."""
    from prefect_dask import DaskTaskRunner

    if plan["address"]:
        return DaskTaskRunner(address=plan["address"])
    cluster = {"n_workers": plan["workers"], "threads_per_worker": 1, "processes": True}
    cluster["dashboard_address"] = None
    return DaskTaskRunner(cluster_kwargs=cluster)


def run_sweep(plan: dict[str, Any]) -> State:
    """The flow on its Dask task runner; `plan` is flows.sweep_cli.Plan.as_dict() (validated)."""
    import logging

    candidates = [
        {**c, "args": candidate_args(c["name"], {**plan["sets"], **c["values"]}, plan["copy_paths"])}
        for c in plan["candidates"]
    ]
    plan = {**plan, "candidates": candidates}
    logging.getLogger("shipyard").setLevel(logging.INFO)
    for name in ("distributed", "prefect.task_runner.dask"):  # cluster start/stop chatter; warnings stay
        logging.getLogger(name).setLevel(logging.WARNING)
    return sweep.with_options(task_runner=task_runner(plan))(plan, return_state=True)
