"""`shipyard schedule` and `shipyard worker` against a real `prefect server start` on loopback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.project import FAST, env, make_project

FLOW = "shipyard-scheduled"


def cli(project: Path, *args: str, api: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """The schedule/worker commands (`python -m flows.schedule_cli` runs the same functions as `shipyard`)."""
    return subprocess.run(
        [sys.executable, "-m", "flows.schedule_cli", *args],
        cwd=project,
        env=env(PREFECT_API_URL=api),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def call_api(api_url: str, work):
    """Run `work(client)` with an async Prefect client on the test server."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def main():
        with temporary_settings({PREFECT_API_URL: api_url}):
            async with get_client() as client:
                return await work(client)

    return asyncio.run(main())


def read_deployment(api_url: str, name: str):
    return call_api(api_url, lambda client: client.read_deployment_by_name(f"{FLOW}/{name}"))


def run_now(api_url: str, name: str) -> str:
    """A flow run of the deployment due now (as the scheduler makes one), for the worker to pick up."""

    async def work(client):
        deployment = await client.read_deployment_by_name(f"{FLOW}/{name}")
        return str((await client.create_flow_run_from_deployment(deployment.id)).id)

    return call_api(api_url, work)


def read_run(api_url: str, run_id: str):
    return call_api(api_url, lambda client: client.read_flow_run(run_id))


def test_interval_deployment_is_created_listed_updated_and_deleted(prefect_server, tmp_path):
    project = make_project(tmp_path / "p")
    created = cli(
        project,
        "schedule",
        "--interval",
        "3600",
        "--set",
        "train.epochs=3",
        "--name",
        "hourly",
        api=prefect_server,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    deployment = read_deployment(prefect_server, "hourly")
    assert [s.schedule.interval.total_seconds() for s in deployment.schedules] == [3600]
    assert deployment.parameters == {"overrides": ["train.epochs=3"]}
    assert deployment.work_pool_name == "shipyard"
    assert Path(deployment.job_variables["working_dir"]) == project.resolve()
    assert deployment.entrypoint.endswith("flows/schedule.py:scheduled_pipeline")

    listed = cli(project, "schedule", "--list", api=prefect_server)
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if "hourly" in line)
    assert "every 3600 s" in line and "train.epochs=3" in line

    updated = cli(project, "schedule", "--interval", "600", "--name", "hourly", api=prefect_server)
    assert updated.returncode == 0, updated.stderr
    again = read_deployment(prefect_server, "hourly")
    assert again.id == deployment.id
    assert [s.schedule.interval.total_seconds() for s in again.schedules] == [600]
    assert again.parameters == {"overrides": []}

    assert cli(project, "schedule", "--delete", "hourly", api=prefect_server).returncode == 0
    assert "hourly" not in cli(project, "schedule", "--list", api=prefect_server).stdout
    missing = cli(project, "schedule", "--delete", "hourly", api=prefect_server)
    assert missing.returncode == 1
    assert (
        missing.stderr.startswith("error: --delete 'hourly': no deployment")
        and "Traceback" not in missing.stderr
    )


def test_cron_deployment_keeps_its_expression(prefect_server, tmp_path):
    project = make_project(tmp_path / "p")
    result = cli(project, "schedule", "--cron", "0 3 * * *", "--name", "nightly", api=prefect_server)
    assert result.returncode == 0, result.stdout + result.stderr
    deployment = read_deployment(prefect_server, "nightly")
    assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * *"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--cron", "every day"], "error: --cron 'every day': "),
        (["--interval", "0"], "error: --interval 0: must be a positive number of seconds"),
        (["--interval", "60", "--list"], "error: give exactly one of --cron, --interval, --list, --delete"),
        ([], "error: give exactly one of"),
        (["--interval", "60", "--set", "train.epochs=-1"], "train.epochs"),
    ],
)
def test_bad_schedule_is_refused_with_one_line(prefect_server, tmp_path, args, expected):
    result = cli(make_project(tmp_path / "p"), "schedule", *args, api=prefect_server)
    assert result.returncode == 1
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_unreachable_server_is_one_line(tmp_path):
    from tests.project import free_port

    api = f"http://127.0.0.1:{free_port()}/api"
    result = cli(make_project(tmp_path / "p"), "schedule", "--list", api=api)
    assert result.returncode == 1
    assert f"Prefect API at {api} unreachable" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_worker_finishes_an_unchanged_project_as_no_changes(prefect_server, trained_project):
    """trained_project already ran with FAST: the same params and data retrain nothing."""
    sets = [arg for item in FAST for arg in ("--set", item)]
    created = cli(
        trained_project,
        "schedule",
        "--interval",
        "3600",
        *sets,
        "--name",
        "same",
        "--pool",
        "same",
        api=prefect_server,
    )
    assert created.returncode == 0, created.stderr
    model = (trained_project / "models/model.pt").stat().st_mtime_ns
    run_id = run_now(prefect_server, "same")
    worker = cli(trained_project, "worker", "--pool", "same", "--run-once", api=prefect_server)
    assert worker.returncode == 0, worker.stdout + worker.stderr
    state = read_run(prefect_server, run_id).state
    assert state.is_completed() and state.name == "No changes", state
    assert (trained_project / "models/model.pt").stat().st_mtime_ns == model


class Receiver(BaseHTTPRequestHandler):
    bodies: list[dict] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook():
    """A local HTTP receiver on 127.0.0.1 that records the JSON bodies POSTed to it."""
    Receiver.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", Receiver.bodies
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_failed_scheduled_run_posts_to_the_webhook(prefect_server, tmp_path, webhook):
    url, bodies = webhook
    project = make_project(tmp_path / "p")
    sets = ["--set", "ingest.source=missing.csv"]
    created = cli(
        project,
        "schedule",
        "--interval",
        "3600",
        *sets,
        "--name",
        "broken",
        "--pool",
        "broken",
        api=prefect_server,
    )
    assert created.returncode == 0, created.stderr
    params = project / "params.yaml"
    text = params.read_text()
    assert "webhook_url: null" in text  # the project's params.yaml has the key, off
    params.write_text(text.replace("webhook_url: null", f"webhook_url: {url}"))
    before = params.read_bytes()

    run_id = run_now(prefect_server, "broken")
    worker = cli(project, "worker", "--pool", "broken", "--run-once", api=prefect_server)
    assert worker.returncode == 0, worker.stdout + worker.stderr

    run = read_run(prefect_server, run_id)
    assert run.state.is_failed()
    assert len(bodies) == 1, (bodies, worker.stdout[-2000:], worker.stderr[-2000:])
    message = bodies[0]
    assert message["run_id"] == run_id and message["run_name"] == run.name
    assert message["status"] == "failed" and message["reason"] and message["model_version"] is None
    assert datetime.fromisoformat(message["timestamp"]).tzinfo is not None
    assert params.read_bytes() == before  # a failed run leaves params.yaml as it found it
