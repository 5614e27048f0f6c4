"""The inference server on a tiny ONNX model written into a registry laid out as promote publishes it."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper

from serving.app import create_app, serve
from serving.lifecycle import ServeSettings
from serving.model import CPU, CUDA, LoadedModel, ServingError, load_production

ROOT = Path(__file__).resolve().parents[2]
NUMERIC = ["mean radius", "b"]
FILLS = [0.5, -2.0]  # the graph imputes NaN with these, as real exported models do
CATEGORIES = ["blue", "red"]
COLUMNS = [*NUMERIC, "colour"]
RNG = np.random.default_rng(0)


def tiny_model(classes: int) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """features [batch, 3] -> impute NaN -> MatMul + Add -> logits -> Softmax -> probabilities."""
    weights = RNG.normal(size=(len(COLUMNS), classes)).astype(np.float32)
    bias = RNG.normal(size=classes).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("IsNaN", ["features"], ["missing"]),
            helper.make_node("Where", ["missing", "F", "features"], ["filled"]),
            helper.make_node("MatMul", ["filled", "W"], ["scores"]),
            helper.make_node("Add", ["scores", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "tiny",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", len(COLUMNS)])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes]),
        ],
        [
            numpy_helper.from_array(np.array([*FILLS, 0.0], np.float32), "F"),
            numpy_helper.from_array(weights, "W"),
            numpy_helper.from_array(bias, "B"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, weights, bias


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def publish(registry: Path, labels: list[Any], version: str = "v0001") -> tuple[np.ndarray, np.ndarray]:
    """Write one version and point production at it, as promote does; returns the model's weights."""
    folder = registry / "versions" / version
    folder.mkdir(parents=True)
    model, weights, bias = tiny_model(len(labels))
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    tensor = {"dtype": "float32", "shape": ["batch", len(labels)]}
    manifest = {
        "format": 1,
        "name": "shipyard-model",
        "version": version,
        "task": "tabular",
        "target": "target",
        "labels": labels,
        "features": {
            "numeric": [
                {"name": n, "fill": f, "mean": 0.0, "std": 1.0} for n, f in zip(NUMERIC, FILLS, strict=True)
            ],
            "categorical": [{"name": "colour", "categories": CATEGORIES}],
        },
        "onnx": {
            "file": "model.onnx",
            "opset": 17,
            "inputs": [{"name": "features", "dtype": "float32", "shape": ["batch", len(COLUMNS)]}],
            "outputs": [{"name": "logits", **tensor}, {"name": "probabilities", **tensor}],
        },
        "files": {"model.onnx": sha256(folder / "model.onnx")},
        "metrics": {},
        "params": {},
        "data": {},
        "git_commit": "0" * 40,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    pointer = {"version": version, "promoted_at": "2026-11-22T19:00:00Z"}
    (registry / "production.json").write_text(json.dumps(pointer))
    return weights, bias


def expected(records: list[dict[str, Any]], weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The same model in numpy: numbers (fill when missing), colour as 0 (unseen) or 1 + its index."""
    rows = [
        [
            *(fill if r[n] in (None, "") else float(r[n]) for n, fill in zip(NUMERIC, FILLS, strict=True)),
            CATEGORIES.index(r["colour"]) + 1 if r["colour"] in CATEGORIES else 0,
        ]
        for r in records
    ]
    logits = np.asarray(rows, dtype=np.float32) @ weights + bias
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


RECORDS = [
    {"mean radius": 14.1, "b": -1.0, "colour": "red"},
    {"mean radius": -3.0, "b": 2.5, "colour": "blue"},
    {"mean radius": "0.5", "b": 0, "colour": "green"},  # a number as text; an unseen category
    {"mean radius": 1.0, "b": 1.0, "colour": "red", "extra": "ignored"},
    {"mean radius": None, "b": "", "colour": None},  # missing values: imputed in the graph
]


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    publish(tmp_path, [0, 1, 2])
    return tmp_path


@pytest.fixture
def client(registry: Path) -> TestClient:
    return TestClient(create_app(registry))


def test_health_names_model_version_and_provider(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["model"] == "shipyard-model" and body["version"] == "v0001"
    assert body["provider"] in {CPU, CUDA}
    assert (body["task"], body["variant"]) == ("tabular", "fp32")


@pytest.mark.parametrize("labels", [[0, 1, 2], ["setosa", "versicolor", "virginica"], [False, True]])
def test_predict_matches_numpy(tmp_path: Path, labels: list[Any]) -> None:
    weights, bias = publish(tmp_path, labels)
    response = TestClient(create_app(tmp_path)).post("/predict", json={"records": RECORDS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"]) == ("shipyard-model", "v0001")
    want = expected(RECORDS, weights, bias)
    got = body["predictions"]
    assert [p["label"] for p in got] == [labels[i] for i in want.argmax(axis=1)]
    for row, prediction in zip(want, got, strict=True):
        assert list(prediction["probabilities"]) == [str(label) for label in labels]
        np.testing.assert_allclose(list(prediction["probabilities"].values()), row, rtol=1e-5, atol=1e-6)


def test_a_single_record_object_is_one_record(client: TestClient) -> None:
    response = client.post("/predict", json={"records": RECORDS[0]})
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1


def test_an_unexpected_failure_is_a_500_without_traceback(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: LoadedModel, probabilities: np.ndarray) -> list[dict[str, Any]]:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(LoadedModel, "predictions", broken)
    response = client.post("/predict", json={"records": RECORDS})
    assert response.status_code == 500
    assert "internal error" in response.json()["detail"] and "secret" not in response.text


@pytest.mark.parametrize(
    ("records", "words"),
    [
        ([RECORDS[0], {"mean radius": 1.0, "colour": "red"}], ["record 1", "missing column 'b'"]),
        ([{"mean radius": 1.0, "b": 2.0}], ["record 0", "missing column 'colour'"]),
        ([RECORDS[0], RECORDS[1], {**RECORDS[0], "b": "abc"}], ["record 2", "'b'", "'abc'"]),
        ([{**RECORDS[0], "mean radius": True}], ["record 0", "'mean radius'"]),
        ([{**RECORDS[0], "b": "inf"}], ["record 0", "'b'", "finite"]),
        ([{**RECORDS[0], "b": 1e39}], ["record 0", "'b'", "finite"]),  # beyond float32
        ([RECORDS[0], 7], ["record 1", "expected an object"]),
        ([], ["empty"]),
        ("abc", ["must be a list"]),
    ],
)
def test_bad_records_are_422_naming_record_and_column(
    client: TestClient, records: Any, words: list[str]
) -> None:
    response = client.post("/predict", json={"records": records})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert all(word in detail for word in words), detail


@pytest.mark.parametrize(
    ("content", "status", "words"),
    [
        (b"{not json", 400, ["not valid JSON"]),
        (b"[1, 2]", 422, ["JSON object", '{"records": [']),
        (b'{"rows": []}', 422, ['{"records": [']),
        (b"", 422, ["JSON object"]),
    ],
)
def test_bad_bodies_get_one_line_json_detail(
    client: TestClient, content: bytes, status: int, words: list[str]
) -> None:
    response = client.post("/predict", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status
    detail = response.json()["detail"]
    assert isinstance(detail, str) and all(word in detail for word in words), detail
    assert "Traceback" not in response.text


def test_too_many_records_are_refused(registry: Path) -> None:
    client = TestClient(create_app(registry, ServeSettings(max_items=3)))
    response = client.post("/predict", json={"records": RECORDS})
    assert response.status_code == 422
    assert "limit is 3" in response.json()["detail"]


def test_provider_is_the_one_the_session_reports(registry: Path) -> None:
    model = load_production(registry)
    assert model.provider == model.session.get_providers()[0]
    assert model.provider in {CPU, CUDA}
    assert model.provider in model.describe() and "shipyard-model v0001" in model.describe()
    if model.provider == CPU:
        assert "CUDA" in model.describe()  # never a silent fallback


def test_cpu_when_gpu_not_requested(registry: Path) -> None:
    model = load_production(registry, prefer_gpu=False)
    assert model.session.get_providers() == [CPU]
    assert model.describe() == f"serving shipyard-model v0001 (tabular, fp32) on {CPU} (GPU not requested)"


def _has_nvidia_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None or Path("/dev/nvidiactl").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not _has_nvidia_gpu(), reason="needs a CUDA device")
def test_cuda_is_active_on_a_gpu_machine(registry: Path) -> None:
    model = load_production(registry)
    assert model.provider == CUDA, model.describe()
    prediction = model.predict(RECORDS)
    assert len(prediction) == len(RECORDS)


def test_no_production_pointer_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ServingError, match="no production model.*production.json"):
        load_production(tmp_path)


@pytest.mark.parametrize(
    ("pointer", "words"),
    [
        ("{not json", "cannot read"),
        ('{"version": "../../etc"}', "expected"),
        ('{"version": "v0009"}', "no manifest"),
    ],
)
def test_bad_pointer_is_a_clear_error(registry: Path, pointer: str, words: str) -> None:
    (registry / "production.json").write_text(pointer)
    with pytest.raises(ServingError, match=words):
        load_production(registry)


def test_unreadable_manifest_is_a_clear_error(registry: Path) -> None:
    path = registry / "versions" / "v0001" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["features"]["categorical"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(ServingError, match=r"manifest.json: features.categorical: Field required"):
        load_production(registry)


def test_sha256_mismatch_is_refused(registry: Path) -> None:
    path = registry / "versions" / "v0001" / "model.onnx"
    model, _, _ = tiny_model(3)
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ServingError, match="model.onnx: sha256 .* does not match"):
        load_production(registry)


def test_external_data_outside_the_version_folder_is_refused(registry: Path) -> None:
    folder = registry / "versions" / "v0001"
    model = onnx.load(folder / "model.onnx")
    weights = next(t for t in model.graph.initializer if t.name == "W")
    (registry / "versions" / "W.bin").write_bytes(weights.raw_data)
    onnx.external_data_helper.set_external_data(weights, location="../W.bin")
    weights.ClearField("raw_data")
    weights.data_location = TensorProto.EXTERNAL
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["model.onnx"] = sha256(folder / "model.onnx")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ServingError, match="external data of tensor 'W' '../W.bin' points outside"):
        load_production(registry)


def test_serve_fails_before_binding_without_production(tmp_path: Path) -> None:
    with pytest.raises(ServingError, match="no production model"):
        serve(tmp_path, port=0)


def _child_env() -> dict[str, str]:
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def test_serving_never_imports_torch_or_pipeline_tools() -> None:
    forbidden = ["torch", "prefect", "great_expectations", "dvc"]
    code = f"import sys, serving.app, serving.model; print([m for m in {forbidden} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "[]"


def test_real_server_answers_on_localhost_and_stops_on_ctrl_c(registry: Path) -> None:
    code = "import sys, pathlib, serving.app; serving.app.serve(pathlib.Path(sys.argv[1]), port=0)"
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(registry)],
        cwd=ROOT,
        env=_child_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(process, lines), daemon=True).start()
    seen: list[str] = []
    try:
        url = _wait_for(r"listening on (http://127\.0\.0\.1:\d+)", lines, seen)
        assert any(
            re.match(r"serving shipyard-model v0001 \(tabular, fp32\) on \w+ExecutionProvider", s)
            for s in seen
        ), seen
        health = httpx.get(f"{url}/health", timeout=10)
        assert health.json()["status"] == "ok"
        response = httpx.post(f"{url}/predict", json={"records": RECORDS}, timeout=10)
        assert response.status_code == 200 and len(response.json()["predictions"]) == len(RECORDS)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail("the server did not stop within 15 s of Ctrl-C")
    assert code == 0, seen


def _pump(process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    assert process.stderr is not None
    for line in process.stderr:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _wait_for(pattern: str, lines: queue.Queue[str | None], seen: list[str], timeout: float = 60) -> str:
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no line matching {pattern!r} within {timeout} s: {seen}")
        if line is None:
            pytest.fail(f"the server exited before {pattern!r}: {seen}")
        seen.append(line)
        if match := re.search(pattern, line):
            return match.group(1)
