import subprocess

import pytest

from tests.project import BIN, FAST, env, free_port, make_project, shipyard, stop, tabular_frame, wait_for


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real `prefect server start` on loopback for the session; stopped at the end."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/api/health")
        yield f"http://127.0.0.1:{port}/api"
    finally:
        stop(process)


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory, prefect_server):
    """A project that has run the pipeline once on a small CSV: the last good state to protect."""
    project = make_project(tmp_path_factory.mktemp("project"))
    tabular_frame().to_csv(project / "good.csv", index=False)
    sets = [arg for item in FAST for arg in ("--set", item)]
    result = shipyard(
        project, "run", "--data", "good.csv", "--target", "label", *sets, PREFECT_API_URL=prefect_server
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return project
