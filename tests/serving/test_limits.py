"""The server's limits and its answers to malformed requests: 413, 503 with Retry-After, 400/415/422/404/405.

In-process (TestClient) where only the app's logic matters; a live server where HTTP framing does (a
chunked body has no Content-Length, so only the streamed byte count can refuse it). Every refusal is JSON
(`error` on the OIP routes, `detail` elsewhere) and never shows a traceback or a path of the server's code.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.batching import BatchSettings
from serving.lifecycle import ServeSettings
from serving.model import LoadedModel
from tests.serving.live import live_server
from tests.serving.test_serving import RECORDS, publish

INFER = "/v2/models/shipyard-model/infer"
FEATURES = [[14.1, -1.0, 2.0], [-3.0, 2.5, 1.0]]
SERVER_CODE = re.compile(r"Traceback|File \"|[\w/]+\.py\b|site-packages")
WAIT = 10.0


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    publish(tmp_path / "registry", [0, 1, 2])
    return tmp_path / "registry"


@pytest.fixture
def client(registry: Path) -> Iterator[TestClient]:
    with TestClient(create_app(registry, ServeSettings(reload_interval=0))) as client:
        yield client


def infer_body(features: Any = FEATURES, **entry: Any) -> dict[str, Any]:
    """An OIP request for the tiny tabular model; `entry` overrides fields of its one input."""
    array = np.asarray(features)
    tensor = {
        "name": "features",
        "shape": list(array.shape),
        "datatype": "FP32",
        "data": array.ravel().tolist(),
    }
    return {"inputs": [{**tensor, **entry}]}


def assert_clean_error(response: httpx.Response, status: int, *words: str) -> str:
    """The status, a JSON body with the protocol's message key, the words in it, and nothing internal."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    key = "error" if response.request.url.path.startswith("/v2") else "detail"
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get(key), str), body
    assert not SERVER_CODE.search(response.text), response.text
    for word in words:
        assert word in body[key], body[key]
    return body[key]


# ---- body size


@pytest.mark.parametrize("path", ["/predict", INFER])
def test_a_declared_body_over_the_limit_is_413(registry: Path, path: str) -> None:
    app = create_app(registry, ServeSettings(max_body=1000, reload_interval=0))
    with TestClient(app) as client:
        response = client.post(path, content=b" " * 2000, headers={"content-type": "application/json"})
        assert_clean_error(response, 413, "2,000 bytes", "limit of 1,000 bytes")
        assert client.post("/predict", json={"records": RECORDS[:1]}).status_code == 200


def chunks(total: int, size: int = 400) -> Iterator[bytes]:
    """`total` bytes of a JSON body's padding, in pieces, sent without a Content-Length."""
    yield b'{"records": [], "pad": "'
    for _ in range(total // size):
        yield b"x" * size
    yield b'"}'


def raw_chunked_post(port: int, pieces: list[bytes], finish: bool) -> tuple[int, bytes]:
    """POST /predict with Transfer-Encoding: chunked over a raw socket; the response's status and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        head = "POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        sock.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
        for piece in pieces:
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        if finish:
            sock.sendall(b"0\r\n\r\n")
        with sock.makefile("rb") as stream:
            status = int(stream.readline().split()[1])
            length = 0
            while (line := stream.readline().strip()) != b"":
                key, _, value = line.partition(b":")
                if key.strip().lower() == b"content-length":
                    length = int(value)
            return status, stream.read(length)


def test_a_streamed_body_over_the_limit_is_413_and_the_server_goes_on(registry: Path) -> None:
    with live_server(registry, "--max-body-mb", "0.001", "--reload-interval-s", "0") as server:  # 1,048 bytes
        url = f"{server.url}/predict"
        sent = httpx.post(url, content=chunks(4000), headers={"content-type": "application/json"})
        assert "content-length" not in sent.request.headers
        assert_clean_error(sent, 413, "over the limit of 1,048 bytes")

        declared = httpx.post(url, content=b" " * 4000, headers={"content-type": "application/json"})
        assert_clean_error(declared, 413, "4,000 bytes", "1,048 bytes")

        # refused once the limit is passed, without waiting for the rest of the body
        status, body = raw_chunked_post(server.port, [b"x" * 600] * 2, finish=False)
        assert status == 413 and "over the limit of 1,048 bytes" in json.loads(body)["detail"], body

        status, body = raw_chunked_post(
            server.port, [json.dumps({"records": RECORDS[:2]}).encode()], finish=True
        )
        assert status == 200 and len(json.loads(body)["predictions"]) == 2, body
        after = httpx.post(url, json={"records": RECORDS[:1]})
        assert after.status_code == 200 and after.json()["version"] == "v0001"


# ---- queue and timeout


class SlowModel:
    """LoadedModel.run that, once `slow` is set, blocks each run until `release` (it signals `started`)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.slow, self.started, self.release = threading.Event(), threading.Event(), threading.Event()
        original = LoadedModel.run

        def run(model: LoadedModel, *args: Any, **kw: Any) -> dict[str, np.ndarray]:
            if self.slow.is_set():
                self.started.set()
                self.release.wait(WAIT)
            return original(model, *args, **kw)

        monkeypatch.setattr(LoadedModel, "run", run)

    def __enter__(self) -> SlowModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()  # never leave the batcher's worker blocked, whatever the test did


def in_thread(call: Callable[[], httpx.Response]) -> tuple[threading.Thread, list[httpx.Response]]:
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(call()), daemon=True)
    thread.start()
    return thread, answers


def wait_for(condition: Callable[[], bool]) -> None:
    event = threading.Event()
    for _ in range(int(WAIT / 0.005)):
        if condition():
            return
        event.wait(0.005)
    raise AssertionError("condition not reached")


@pytest.mark.parametrize("path", ["/predict", INFER])
def test_a_full_queue_is_503_with_retry_after(
    registry: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    slow = SlowModel(monkeypatch)
    batch = BatchSettings(max_batch=1, max_wait=0, max_queue=1, inline_below=0)  # always the worker's queue
    app = create_app(registry, ServeSettings(batch=batch, reload_interval=0))
    batcher = app.state.shipyard.current.batcher
    body = {"records": RECORDS[:1]} if path == "/predict" else infer_body()
    with TestClient(app) as client, slow:
        slow.slow.set()
        running, first = in_thread(lambda: client.post(path, json=body))
        assert slow.started.wait(WAIT)
        queued, second = in_thread(lambda: client.post(path, json=body))
        wait_for(lambda: batcher.depth == 1)
        refused = client.post(path, json=body)
        slow.release.set()
        running.join(WAIT)
        queued.join(WAIT)
        assert_clean_error(refused, 503, "1 requests are waiting", "limit 1", "retry later")
        assert refused.headers["retry-after"] == "1"
        assert [first[0].status_code, second[0].status_code] == [200, 200]
        route = path.replace("shipyard-model", "{name}")
        assert f'shipyard_requests_total{{route="{route}",status="503"}} 1.0' in client.get("/metrics").text


@pytest.mark.parametrize("path", ["/predict", INFER])
def test_a_request_over_its_timeout_is_503_and_the_server_goes_on(
    registry: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    slow = SlowModel(monkeypatch)
    batch = BatchSettings(inline_below=0)  # the worker's queue: a quick idle model would answer inline
    app = create_app(registry, ServeSettings(timeout=0.2, reload_interval=0, batch=batch))
    body = {"records": RECORDS[:1]} if path == "/predict" else infer_body()
    with TestClient(app) as client, slow:
        slow.slow.set()
        late = client.post(path, json=body)
        slow.slow.clear()
        slow.release.set()
        assert client.post(path, json=body).status_code == 200
    message = assert_clean_error(late, 503, "timeout")
    # the message names the configured limit, not the time that was left after parsing
    assert re.search(r"timeout of (0\.2 s|200 ms)", message), message
    assert late.headers["retry-after"] == "1"


# ---- malformed requests


def oip(name: str, body: Any, status: int, *words: str, content_type: str = "application/json") -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body, allow_nan=True).encode()
    return pytest.param(INFER, content, content_type, status, words, id=f"oip-{name}")


def predict(name: str, body: Any, status: int, *words: str, content_type: str = "application/json") -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body, allow_nan=True).encode()
    return pytest.param("/predict", content, content_type, status, words, id=f"predict-{name}")


MALFORMED = [
    oip("wrong-shape", infer_body([[1.0, 2.0, 3.0, 4.0]]), 400, "'features'", "[1, 4]"),
    oip("wrong-rank", infer_body([1.0, 2.0, 3.0]), 400, "'features'"),
    oip("wrong-dtype", infer_body([[1, 2, 3]], datatype="INT64"), 400, "'features'", "INT64", "FP32"),
    oip("missing-input", {"inputs": []}, 400, "'features'"),
    oip("no-inputs-key", {"outputs": []}, 400, "'features'"),
    oip(
        "unknown-input",
        {"inputs": [*infer_body()["inputs"], {**infer_body()["inputs"][0], "name": "bogus"}]},
        400,
        "bogus",
    ),
    oip("inf", infer_body([[1.0, float("inf"), 0.0]]), 400, "'features'", "Inf"),
    oip("minus-inf", infer_body([[1.0, 2.0, -float("inf")]]), 400, "'features'", "Inf"),
    oip("count-not-shape", infer_body(shape=[2, 3], data=[1, 2, 3, 4, 5]), 400, "'features'", "5"),
    oip("string-data", infer_body(data=["a", "b", "c", "d", "e", "f"]), 400, "'features'"),
    oip("not-json", b'{"inputs": [', 400, "not valid JSON"),
    oip("not-an-object", b"[1, 2, 3]", 400, "JSON object"),
    oip("plain-text", b"hello", 415, "text/plain", content_type="text/plain"),
    predict("not-json", b'{"records": [', 400, "not valid JSON"),
    predict("not-an-object", b"[1, 2, 3]", 422, "JSON object"),
    predict("missing-column", {"records": [{"mean radius": 1.0, "b": 2.0}]}, 422, "record 0", "'colour'"),
    predict("not-a-number", {"records": [RECORDS[0], {**RECORDS[0], "b": "abc"}]}, 422, "record 1", "'b'"),
    predict(
        "inf", {"records": [{**RECORDS[0], "mean radius": float("inf")}]}, 422, "'mean radius'", "finite"
    ),
    predict("wrong-key", {"rows": RECORDS}, 422, '{"records": ['),
    predict("plain-text", b"hello", 415, "text/plain", content_type="text/plain"),
]


@pytest.mark.parametrize(("path", "content", "content_type", "status", "words"), MALFORMED)
def test_a_malformed_request_is_refused_naming_what_is_wrong(
    client: TestClient, path: str, content: bytes, content_type: str, status: int, words: tuple[str, ...]
) -> None:
    response = client.post(path, content=content, headers={"content-type": content_type})
    assert_clean_error(response, status, *words)


def test_nan_is_a_missing_value_for_a_tabular_model_on_both_routes(client: TestClient) -> None:
    """The positive control for the Inf rows above: NaN is imputed in the graph, so it is answered."""
    oip_answer = client.post(
        INFER, content=json.dumps(infer_body([[float("nan"), 1.0, 2.0]]), allow_nan=True)
    )
    assert oip_answer.status_code == 200, oip_answer.text
    record = {**RECORDS[0], "mean radius": None}
    assert client.post("/predict", json={"records": [record]}).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status", "words"),
    [
        ("POST", "/v2/models/nope/infer", 404, ["'nope'", "shipyard-model"]),
        ("POST", "/v2/models/shipyard-model/versions/v0009/infer", 404, ["'v0009'"]),
        ("POST", "/v1/models/nope/predict", 404, ["'nope'"]),
        ("GET", "/v2/models/nope", 404, ["'nope'"]),
        ("POST", "/v3/nowhere", 404, []),
        ("GET", "/v2/models/shipyard-model/nowhere", 404, []),
        ("GET", INFER, 405, []),
        ("GET", "/predict", 405, []),
    ],
)
def test_unknown_routes_models_and_methods(
    client: TestClient, method: str, path: str, status: int, words: list[str]
) -> None:
    response = client.request(method, path, json={"records": RECORDS[:1]} if method == "POST" else None)
    assert_clean_error(response, status, *words)


def test_no_error_shows_server_internals_even_when_the_model_fails(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kw: Any) -> dict[str, np.ndarray]:
        raise RuntimeError(f"secret state in {Path(__file__)}")

    monkeypatch.setattr(client.app.state.shipyard.current.batcher, "run_batch", broken)
    for path, body in [("/predict", {"records": RECORDS[:1]}), (INFER, infer_body())]:
        response = client.post(path, json=body)
        assert_clean_error(response, 500, "internal error")
        assert "secret" not in response.text
