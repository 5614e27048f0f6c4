"""The drift gate end to end: a 10x shift of one column stops promotion with the column named."""

import json
from pathlib import Path

import pandas as pd
import typer
from typer.testing import CliRunner

from flows.drift_cli import drift
from tests.project import shipyard

SHIFTED = "age (years)"


def shifted_copy(project: Path) -> str:
    """good.csv with one column at ten times its scale: same rows, same splits, one drifted column."""
    frame = pd.read_csv(project / "good.csv")
    frame[SHIFTED] *= 10
    frame.to_csv(project / "shifted.csv", index=False)
    return "shifted.csv"


def test_a_shifted_column_stops_promotion(trained_project: Path, prefect_server: str) -> None:
    project = trained_project
    pointer = project / "registry/production.json"
    before = pointer.read_bytes()
    data = shifted_copy(project)
    result = shipyard(project, "run", "--data", data, "--target", "label", PREFECT_API_URL=prefect_server)
    assert result.returncode != 0, result.stdout
    [error] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert f"'{SHIFTED}'" in error and "drift" in error, error
    assert pointer.read_bytes() == before
    report = json.loads((project / "reports/drift.json").read_text(encoding="utf-8"))
    assert report["status"] == "critical" and report["critical_columns"] == [SHIFTED]
    assert report["reference"] == "production v0001"


def test_the_drift_command_compares_with_production(trained_project: Path, monkeypatch) -> None:
    monkeypatch.chdir(trained_project)
    app = typer.Typer()
    app.command()(drift)
    app.callback()(lambda: None)
    runner = CliRunner()
    shifted = runner.invoke(app, ["drift", "--data", shifted_copy(trained_project)])
    assert shifted.exit_code == 1, shifted.output
    assert f"column '{SHIFTED}': PSI" in shifted.stdout and "production v0001" in shifted.stdout
    same = runner.invoke(app, ["drift", "--data", "good.csv"])
    assert same.exit_code == 0, same.output
