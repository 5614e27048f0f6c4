"""`shipyard schedule`: a cron-scheduled Prefect deployment of the pipeline on a real server."""

import asyncio

from tests.project import make_project, shipyard


async def read_deployment(api_url: str, name: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        async with get_client() as client:
            return await client.read_deployment_by_name(f"shipyard-pipeline/{name}")


def test_schedule_creates_a_cron_deployment(prefect_server, tmp_path):
    project = make_project(tmp_path / "p")
    result = shipyard(
        project,
        "schedule",
        "--cron",
        "0 3 * * *",
        "--name",
        "nightly",
        "--apply-only",
        PREFECT_API_URL=prefect_server,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    deployment = asyncio.run(read_deployment(prefect_server, "nightly"))
    assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * *"]
    assert deployment.entrypoint.endswith("flows/pipeline.py:pipeline")


def test_bad_cron_is_refused(prefect_server, tmp_path):
    result = shipyard(
        make_project(tmp_path / "p"),
        "schedule",
        "--cron",
        "every day",
        "--apply-only",
        PREFECT_API_URL=prefect_server,
    )
    assert result.returncode != 0
    assert "--cron 'every day'" in result.stderr and "Traceback" not in result.stderr
