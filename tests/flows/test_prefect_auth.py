"""`shipyard schedule` and `shipyard worker` against a `prefect server start` with basic auth on.

The server takes PREFECT_SERVER_API_AUTH_STRING="user:password"; Prefect's client sends
PREFECT_API_AUTH_STRING as an `Authorization: Basic` header. Only /api/health answers without it.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.project import BIN, env, free_port, make_project, stop, wait_for

FLOW = "shipyard-scheduled"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """A real `prefect server start` on loopback with basic auth; (API URL, "user:password")."""
    home = tmp_path_factory.mktemp("prefect-auth-home")
    port = free_port()
    auth = f"shipyard:{secrets.token_urlsafe(12)}"
    server_env = env(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_API_AUTH_STRING=auth,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
    )
    process = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=server_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/api/health")
        yield f"http://127.0.0.1:{port}/api", auth
    finally:
        stop(process)


def cli(project: Path, *args: str, api: str, auth: str | None, timeout: float = 240):
    """`python -m flows.schedule_cli` (what `shipyard schedule|worker` run) sending these credentials."""
    extra = {"PREFECT_API_URL": api} | ({"PREFECT_API_AUTH_STRING": auth} if auth is not None else {})
    base = {k: v for k, v in env().items() if k != "PREFECT_API_AUTH_STRING"}
    return subprocess.run(
        [sys.executable, "-m", "flows.schedule_cli", *args],
        cwd=project,
        env={**base, **extra},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def call_api(api: str, auth: str, work):
    """Run `work(client)` with an async Prefect client that sends the credentials."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    async def main():
        with temporary_settings({PREFECT_API_URL: api, PREFECT_API_AUTH_STRING: auth}):
            async with get_client() as client:
                return await work(client)

    return asyncio.run(main())


def deployment_names(api: str, auth: str) -> set[str]:
    from prefect.client.schemas.sorting import DeploymentSort

    async def work(client):  # limit and sort given: the client sends null otherwise
        return {d.name for d in await client.read_deployments(sort=DeploymentSort.NAME_ASC, limit=200)}

    return call_api(api, auth, work)


def test_the_server_really_requires_credentials(auth_server):
    api, auth = auth_server
    user, password = auth.split(":", 1)
    assert httpx.post(f"{api}/flows/filter", json={}).status_code == 401
    assert httpx.post(f"{api}/flows/filter", json={}, auth=(user, password)).status_code == 200


def test_schedule_list_and_delete_with_credentials(auth_server, tmp_path):
    api, auth = auth_server
    project = make_project(tmp_path / "p")
    created = cli(project, "schedule", "--interval", "3600", "--name", "x", api=api, auth=auth)
    assert created.returncode == 0, created.stdout + created.stderr

    async def read(client):
        return await client.read_deployment_by_name(f"{FLOW}/x")

    deployment = call_api(api, auth, read)
    assert [s.schedule.interval.total_seconds() for s in deployment.schedules] == [3600]
    password = auth.split(":", 1)[1]
    assert password not in deployment.model_dump_json()  # the credentials stay with the client

    listed = cli(project, "schedule", "--list", api=api, auth=auth)
    assert listed.returncode == 0, listed.stderr
    assert any(line.split()[:1] == ["x"] and "every 3600 s" in line for line in listed.stdout.splitlines())

    deleted = cli(project, "schedule", "--delete", "x", api=api, auth=auth)
    assert deleted.returncode == 0, deleted.stderr
    assert "x" not in deployment_names(api, auth)


@pytest.mark.parametrize(
    ("given", "args"),
    [
        (None, ["schedule", "--list"]),
        ("wrong", ["schedule", "--interval", "3600", "--name", "refused"]),
        (None, ["worker", "--run-once", "--pool", "refused"]),
        ("wrong", ["worker", "--run-once", "--pool", "refused"]),
    ],
    ids=["list-none", "schedule-wrong", "worker-none", "worker-wrong"],
)
def test_missing_or_wrong_credentials_are_one_line(auth_server, tmp_path, given, args):
    api, auth = auth_server
    credentials = None if given is None else f"shipyard:{secrets.token_urlsafe(8)}"
    result = cli(make_project(tmp_path / "p"), *args, api=api, auth=credentials)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: Prefect API at {api} answered 401: "), result.stderr
    said = "requires basic auth" if given is None else "refused the credentials"
    assert said in lines[0] and "PREFECT_API_AUTH_STRING" in lines[0]
    if credentials:
        assert credentials.split(":", 1)[1] not in result.stdout + result.stderr
    assert "refused" not in deployment_names(api, auth)  # nothing was created


@pytest.mark.slow
def test_worker_with_credentials_runs_a_scheduled_flow(auth_server, tmp_path):
    """The worker polls the pool with the credentials and its flow-run process reports with them too.

    The run is made to fail fast in ingest (no such file): the failure message on the server comes from
    inside the flow, so the run really ran and reported back, without the minute a full pipeline takes.
    """
    api, auth = auth_server
    project = make_project(tmp_path / "p")
    sets = ["--set", "ingest.source=missing.csv"]
    created = cli(
        project, "schedule", "--interval", "3600", *sets, "--name", "w", "--pool", "w", api=api, auth=auth
    )
    assert created.returncode == 0, created.stdout + created.stderr

    async def run_now(client):
        deployment = await client.read_deployment_by_name(f"{FLOW}/w")
        return (await client.create_flow_run_from_deployment(deployment.id)).id

    run_id = call_api(api, auth, run_now)
    worker = cli(project, "worker", "--pool", "w", "--run-once", api=api, auth=auth)
    assert worker.returncode == 0, worker.stdout + worker.stderr

    async def read_run(client):
        return await client.read_flow_run(run_id)

    state = call_api(api, auth, read_run).state
    assert state.is_failed() and "missing.csv" in (state.message or ""), state
