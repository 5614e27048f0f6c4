"""The Prefect flow under prefect_test_harness: stages run, skip by DVC's rule, and fail cleanly."""

import json

import pytest
from prefect.testing.utilities import prefect_test_harness

from flows.pipeline import pipeline
from tasks.config import apply_overrides, parse_assignment
from tests.project import FAST, make_project, tabular_frame


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def task_states(state) -> dict[str, str]:
    return {r["stage"]: "skipped" if r["skipped"] else "ran" for r in state.result()}


def configure(*settings: str) -> None:
    apply_overrides("params.yaml", [parse_assignment(s) for s in settings])


def test_run_then_noop_then_one_param(harness, tmp_path, monkeypatch):
    project = make_project(tmp_path / "p")
    monkeypatch.chdir(project)
    tabular_frame(classes=3).to_csv("three.csv", index=False)
    configure("ingest.source=three.csv", "ingest.target=label", *FAST)

    first = pipeline(return_state=True)
    assert first.is_completed(), first.message
    assert set(task_states(first).values()) == {"ran"}
    assert json.loads((project / "registry/production.json").read_text())["version"] == "v0001"

    second = pipeline(return_state=True)
    assert set(task_states(second).values()) == {"skipped"}

    configure("train.lr=0.02")
    third = task_states(pipeline(return_state=True))
    assert [third[s] for s in ("default_data", "ingest", "validate")] == ["skipped"] * 3
    assert third["train"] == "ran"


def test_validation_failure_stops_before_training(harness, tmp_path, monkeypatch):
    project = make_project(tmp_path / "p")
    monkeypatch.chdir(project)
    frame = tabular_frame().astype({"age (years)": object})
    frame.loc[[3, 9], "age (years)"] = "unknown"
    frame.to_csv("typo.csv", index=False)
    configure("ingest.source=typo.csv", "ingest.target=label", *FAST)

    state = pipeline(return_state=True)
    assert state.is_failed()
    assert state.message.startswith("validate:")
    assert "age (years)" in state.message and "unknown" in state.message
    assert not (project / "models").exists()
    assert not (project / "registry").exists()
