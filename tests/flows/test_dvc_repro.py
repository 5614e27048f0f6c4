"""`dvc repro` runs the same stages from dvc.yaml and params.yaml: first run, no-op rerun, one param."""

import re

import pytest

from tasks.config import apply_overrides, parse_assignment
from tests.project import FAST, dvc, make_project, tabular_frame


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", output))


def skipped(output: str) -> set[str]:
    return set(re.findall(r"Stage '([\w-]+)' didn't change, skipping", output))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    path = make_project(tmp_path_factory.mktemp("dvc"))
    tabular_frame().to_csv(path / "data.csv", index=False)
    settings = ["ingest.source=data.csv", "ingest.target=label", *FAST]
    apply_overrides(path / "params.yaml", [parse_assignment(s) for s in settings], out=path / "params.yaml")
    return path


def test_first_run_then_noop_then_one_param(project):
    stages = {"default_data", "ingest", "validate", "train", "evaluate", "export", "promote"}
    first = dvc(project, "repro")
    assert first.returncode == 0, first.stdout + first.stderr
    assert ran(first.stdout) == stages
    assert (project / "registry/production.json").exists()

    again = dvc(project, "repro")
    assert again.returncode == 0
    assert ran(again.stdout) == set()
    assert skipped(again.stdout) == stages

    params = project / "params.yaml"
    params.write_text(params.read_text().replace("lr: 0.01", "lr: 0.02"))
    changed = dvc(project, "repro")
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert {"default_data", "ingest", "validate"} <= skipped(changed.stdout)
    assert "train" in ran(changed.stdout)
    assert dvc(project, "status").stdout.strip().endswith("up to date.")
