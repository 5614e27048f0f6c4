"""The server's life on real processes: hot swap under load, corrupt versions refused, SIGTERM drain.

Each test starts `python -m serving` on a free port (tests/serving/live.py) with a fast reload poll. New
versions are written the way promote publishes them: the version folder appears whole (one rename), then
production.json is replaced atomically, so the server never sees half a version or half a pointer.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.serving.live import LiveServer, child_env, free_port, live_server
from tests.serving.test_serving import RECORDS, expected, publish, sha256, tiny_model

LABELS = [0, 1, 2]
INFER = "/v2/models/shipyard-model/infer"
OIP_RECORDS = RECORDS[:2]  # the same rows as features: colour red -> 2, blue -> 1
OIP_BODY = {
    "inputs": [
        {"name": "features", "shape": [2, 3], "datatype": "FP32", "data": [14.1, -1.0, 2, -3.0, 2.5, 1]}
    ],
    "outputs": [{"name": "probabilities"}],
}
FAST_RELOAD = ("--reload-interval-s", "0.2")
WAIT = 15.0


# ---- publishing as promote does


def stage_version(registry: Path, version: str, corrupt: Callable[[Path], None] | None = None) -> Any:
    """Write a version beside the registry, optionally break it, then move its folder in with one rename."""
    staging = registry.parent / f"staging-{version}"
    weights_bias = publish(staging, LABELS, version)
    folder = staging / "versions" / version
    if corrupt is not None:
        corrupt(folder)
    os.rename(folder, registry / "versions" / version)
    shutil.rmtree(staging)
    return weights_bias


def point_production(registry: Path, version: str) -> None:
    """Move the production pointer atomically (temp file in the same folder, then os.replace)."""
    temporary = registry / ".production.json.tmp"
    temporary.write_text(json.dumps({"version": version, "promoted_at": "2026-11-23T00:00:00Z"}))
    os.replace(temporary, registry / "production.json")


def with_other_weights(folder: Path) -> None:
    """A valid model whose bytes no longer match the manifest's sha256."""
    (folder / "model.onnx").write_bytes(tiny_model(len(LABELS))[0].SerializeToString())


def truncated(folder: Path) -> None:
    """Half a model file, with the manifest's hash updated to match it."""
    path = folder / "model.onnx"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    edit_manifest(folder, lambda m: m["files"].update({"model.onnx": sha256(path)}))


def pointing_outside(folder: Path) -> None:
    """A manifest whose model file is another version's, reached through '..'."""
    outside = "../v0001/model.onnx"

    def change(manifest: dict[str, Any]) -> None:
        manifest["onnx"]["file"] = outside
        manifest["files"] = {outside: manifest["files"]["model.onnx"]}

    edit_manifest(folder, change)


def edit_manifest(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


# ---- watching the server


def metric(server: LiveServer, name: str, **labels: str) -> float:
    """One sample of /metrics (0 when the series does not exist yet)."""
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    selector = ",".join(f'{key}="{value}"' for key, value in labels.items())
    match = re.search(rf"^{re.escape(name)}{{{re.escape(selector)}}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def model_info_versions(server: LiveServer) -> list[str]:
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    return re.findall(r'^shipyard_model_info\{.*version="(\w+)".*\} 1\.0$', text, re.MULTILINE)


def wait_until(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.02)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def serving_version(server: LiveServer) -> str:
    return httpx.get(f"{server.url}/health", timeout=5).json()["version"]


def log_line(server: LiveServer, pattern: str) -> str | None:
    return next((line for line in server.output().splitlines() if re.search(pattern, line)), None)


def predict(url: str, client: httpx.Client | None = None) -> httpx.Response:
    return (client or httpx).post(f"{url}/predict", json={"records": RECORDS}, timeout=10)


def answer_of(response: httpx.Response) -> tuple[str, np.ndarray]:
    """The version and the probabilities of a /predict or OIP answer."""
    body = response.json()
    if "predictions" in body:
        rows = [list(p["probabilities"].values()) for p in body["predictions"]]
        return body["version"], np.asarray(rows)
    output = next(o for o in body["outputs"] if o["name"] == "probabilities")
    return body["model_version"], np.asarray(output["data"]).reshape(output["shape"])


def expectations(weights_bias: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """What one version must answer on each route, computed in numpy."""
    return {"/predict": expected(RECORDS, *weights_bias), INFER: expected(OIP_RECORDS, *weights_bias)}


# ---- steady load


@dataclass
class Result:
    sent: float  # time.monotonic() when the request was sent
    path: str
    status: int | None
    version: str | None = None
    probabilities: np.ndarray | None = None
    error: str = ""


@dataclass
class Load:
    """Threads sending requests back to back (half /predict, half OIP) until stopped."""

    url: str
    threads: int = 4
    results: list[Result] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Load:
        self.workers = [
            threading.Thread(target=self.send, args=(INFER if i % 2 else "/predict",), daemon=True)
            for i in range(self.threads)
        ]
        for worker in self.workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for worker in self.workers:
            worker.join(WAIT)

    def send(self, path: str) -> None:
        body = {"records": RECORDS} if path == "/predict" else OIP_BODY
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stopping.is_set():
                sent = time.monotonic()
                try:
                    response = client.post(path, json=body)
                except httpx.HTTPError as err:
                    self.results.append(Result(sent, path, None, error=repr(err)))
                    continue
                if response.status_code != 200:
                    self.results.append(Result(sent, path, response.status_code, error=response.text))
                    continue
                self.results.append(Result(sent, path, 200, *answer_of(response)))


def test_hot_swap_under_load_answers_wholly_old_or_wholly_new(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    want = {"v0001": expectations(publish(registry, LABELS))}
    with live_server(registry, *FAST_RELOAD) as server:
        with Load(server.url) as load:
            time.sleep(0.8)
            want["v0002"] = expectations(stage_version(registry, "v0002"))
            point_production(registry, "v0002")
            wait_until(lambda: serving_version(server) == "v0002", "the swap to v0002")
            swapped = time.monotonic()
            time.sleep(0.8)
        assert metric(server, "shipyard_reloads_total", outcome="loaded") == 1
        assert metric(server, "shipyard_reloads_total", outcome="rejected") == 0
        assert model_info_versions(server) == ["v0002"]
        wait_until(lambda: log_line(server, r"retired shipyard-model v0001"), "retiring v0001")
    assert not np.allclose(want["v0001"]["/predict"], want["v0002"]["/predict"], atol=1e-3)

    assert len(load.results) >= 20, "the load was not steady"
    failed = [r for r in load.results if r.status != 200]
    assert not failed, failed[:5]
    assert {r.version for r in load.results} == {"v0001", "v0002"}
    for result in load.results:
        np.testing.assert_allclose(
            result.probabilities, want[result.version][result.path], rtol=1e-5, atol=1e-6
        )
    late = [r for r in load.results if r.sent > swapped]
    assert late and {r.version for r in late} == {"v0002"}
    assert {r.path for r in late} == {"/predict", INFER}


CORRUPTIONS = [
    ("v0002", with_other_weights, r"model\.onnx: sha256 \w+ does not match"),
    ("v0003", truncated, r"not a readable ONNX model|could not load"),
    ("v0004", pointing_outside, r"'\.\./v0001/model\.onnx' points outside"),
]


def test_corrupt_versions_are_rejected_and_the_old_one_keeps_serving(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    old = expectations(publish(registry, LABELS))
    with live_server(registry, *FAST_RELOAD) as server:
        for count, (version, corrupt, reason) in enumerate(CORRUPTIONS, start=1):
            stage_version(registry, version, corrupt)
            point_production(registry, version)
            line = wait_until(lambda v=version: log_line(server, f"hot reload of {v} rejected"), version)
            assert re.search(reason, line) and line.endswith("still serving v0001"), line
            assert metric(server, "shipyard_reloads_total", outcome="rejected") == count
            assert httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200
            version_now, probabilities = answer_of(predict(server.url))
            assert version_now == "v0001"
            np.testing.assert_allclose(probabilities, old["/predict"], rtol=1e-5, atol=1e-6)

        time.sleep(0.6)  # three more polls: a rejected version is not retried while the pointer stays
        assert metric(server, "shipyard_reloads_total", outcome="rejected") == len(CORRUPTIONS)
        assert server.output().count("hot reload of v0004 rejected") == 1

        good = expectations(stage_version(registry, "v0005"))
        point_production(registry, "v0005")
        wait_until(lambda: serving_version(server) == "v0005", "the swap to v0005")
        version_now, probabilities = answer_of(predict(server.url))
        assert version_now == "v0005"
        np.testing.assert_allclose(probabilities, good["/predict"], rtol=1e-5, atol=1e-6)
        assert metric(server, "shipyard_reloads_total", outcome="loaded") == 1
        assert model_info_versions(server) == ["v0005"]


# ---- SIGTERM


class SlowUpload:
    """A /predict request over a raw socket whose body trickles in: in flight for as long as we like."""

    def __init__(self, port: int) -> None:
        self.body = json.dumps({"records": RECORDS}).encode()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        head = "POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        self.sock.sendall(f"{head}Content-Length: {len(self.body)}\r\n\r\n".encode())
        self.sent = len(self.body) // 3
        self.sock.sendall(self.body[: self.sent])

    def finish(self) -> tuple[int, dict[str, Any]]:
        """Send the rest, read the whole response; its status and JSON body."""
        self.sock.sendall(self.body[self.sent :])
        with self.sock, self.sock.makefile("rb") as stream:
            status = int(stream.readline().split()[1])
            headers = {}
            while (line := stream.readline().strip()) != b"":
                key, _, value = line.decode().partition(":")
                headers[key.lower()] = value.strip()
            return status, json.loads(stream.read(int(headers["content-length"])))

    def close(self) -> None:
        self.sock.close()


def ready_status(server: LiveServer) -> int | None:
    try:
        return httpx.get(f"{server.url}/v2/health/ready", timeout=2).status_code
    except httpx.HTTPError:
        return None


def test_sigterm_drains_in_flight_requests_then_exits_0(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    publish(registry, LABELS)
    with live_server(registry, "--drain-seconds", "1", "--reload-interval-s", "0") as server:
        uploads = [SlowUpload(server.port) for _ in range(3)]
        time.sleep(0.1)
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        wait_until(lambda: ready_status(server) == 503, "ready turning 503", timeout=2)
        during = predict(server.url)  # still served while draining
        assert during.status_code == 200, during.text
        assert time.monotonic() - signalled < 1, "the checks above took longer than the drain"

        time.sleep(max(0.0, signalled + 1.5 - time.monotonic()))  # past the drain: no new connections
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/v2/health/live", timeout=2)
        answers = [upload.finish() for upload in uploads]
        code = server.process.wait(WAIT)

    assert [status for status, _ in answers] == [200, 200, 200], answers
    assert all(len(body["predictions"]) == len(RECORDS) for _, body in answers)
    assert code == 0, server.output()
    log = server.output()
    assert "draining: ready answers 503 for 1 s" in log and log.rstrip().endswith("stopped"), log
    assert "Traceback" not in log, log


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_second_signal_during_the_drain_stops_at_once(tmp_path: Path, second: int) -> None:
    registry = tmp_path / "registry"
    publish(registry, LABELS)
    with live_server(registry, "--drain-seconds", "30", "--reload-interval-s", "0") as server:
        upload = SlowUpload(server.port)  # would keep a graceful shutdown waiting
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: ready_status(server) == 503, "ready turning 503", timeout=2)
        server.process.send_signal(second)
        stopped = time.monotonic()
        try:
            code = server.process.wait(5)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 5 s after a second signal during a 30 s drain:\n{server.output()}")
        finally:
            upload.close()
        assert time.monotonic() - stopped < 3
    assert code == 0, server.output()


def _has_nvidia_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None or Path("/dev/nvidiactl").exists()


@pytest.mark.skipif(_has_nvidia_gpu(), reason="CUDA may really be active on this machine")
def test_require_gpu_without_cuda_exits_before_binding(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    publish(registry, LABELS)
    port = free_port()
    command = [sys.executable, "-m", "serving", "--registry", str(registry), "--port", str(port)]
    done = subprocess.run(
        [*command, "--require-gpu"],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "CUDA is not active" in done.stderr and "--require-gpu" in done.stderr, done.stderr
    assert "listening" not in done.stderr and "Traceback" not in done.stderr, done.stderr
