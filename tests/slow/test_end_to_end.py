"""The whole loop from a user's seat: `shipyard run` on the Prefect temporary API, then `shipyard serve`."""

import json
import subprocess

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.project import BIN, FAST, env, free_port, make_project, shipyard, stop, tabular_frame, wait_for

pytestmark = pytest.mark.slow


def serve_and_predict(project, records: list[dict]) -> dict:
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "shipyard"), "serve", "--port", str(port)],
        cwd=project,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/health", timeout=60)
        health = httpx.get(f"http://127.0.0.1:{port}/health").json()
        response = httpx.post(f"http://127.0.0.1:{port}/predict", json={"records": records}, timeout=30)
        bad = httpx.post(f"http://127.0.0.1:{port}/predict", json={"records": [{"nope": 1}]}, timeout=30)
    finally:
        stop(server)
    startup = server.stdout.read()
    assert health["provider"] in startup  # the active provider is said at start-up
    assert 400 <= bad.status_code < 500 and "Traceback" not in bad.text
    assert response.status_code == 200, response.text
    return response.json()


def test_default_dataset_trains_promotes_and_serves(tmp_path):
    project = make_project(tmp_path / "p")
    result = shipyard(project, "run", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "registry/versions/v0001/model.onnx" in result.stdout
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert metrics["accuracy"] > 0.9 and metrics["roc_auc"] > 0.95
    assert (project / "reports/validation/docs/index.html").exists()
    for plot in ("confusion.png", "roc.png", "pr.png"):
        assert (project / "reports/plots" / plot).stat().st_size > 1000

    test = pd.read_parquet(project / "data/splits/test.parquet")
    records = json.loads(test.drop(columns="target").to_json(orient="records"))
    answer = serve_and_predict(project, records)
    labels = np.array([p["label"] for p in answer["predictions"]])
    assert answer["version"] == "v0001"
    assert (labels == test["target"].to_numpy()).mean() == pytest.approx(metrics["accuracy"], abs=1e-9)


def test_unseen_multiclass_csv_with_categories_and_missing_values(tmp_path):
    project = make_project(tmp_path / "p")
    frame = tabular_frame(rows=450, classes=3, seed=1)
    frame.to_csv(project / "visits.csv", index=False)
    sets = [arg for item in FAST for arg in ("--set", item)]
    result = shipyard(project, "run", "--data", "visits.csv", "--target", "label", *sets, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((project / "registry/versions/v0001/manifest.json").read_text())
    assert sorted(manifest["labels"]) == ["high", "low", "mid"]
    assert [c["name"] for c in manifest["features"]["categorical"]] == ["colour"]

    rows = [
        {"age (years)": 40.0, "dose_mg": None, "colour": "red", "noise": 0.1},
        {"age (years)": 56.5, "dose_mg": 9.1, "colour": "never-seen", "noise": -0.3},
    ]
    answer = serve_and_predict(project, rows)
    assert [p["label"] for p in answer["predictions"]] == ["low", "high"]
    for prediction in answer["predictions"]:
        assert sum(prediction["probabilities"].values()) == pytest.approx(1, abs=1e-5)
