"""bench.loadgen against a tiny local server (counts, errors, percentiles, limits, framing), bench.serve's
metrics parsing and goals, and a --quick run of the serving benchmark end to end (slow)."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from bench import serve
from bench.loadgen import LoadGenerator, LoadSpec, http_request, percentile, run_load

SLOW_MS = 20


class TinyServer:
    """An asyncio HTTP/1.1 server in a thread whose answer depends on the path:
    /ok 200, /fail 500, /slow 200 after SLOW_MS, /chunked 200 chunked, /close 200 then close,
    /drop closes without answering."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.served = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(5)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()
        server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ")[1].decode()
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                await reader.readexactly(length)
                self.served += 1
                if path == "/drop":
                    writer.close()
                    return
                if path == "/slow":
                    await asyncio.sleep(SLOW_MS / 1e3)
                writer.write(self._answer(path))
                await writer.drain()
                if path == "/close":
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    @staticmethod
    def _answer(path: str) -> bytes:
        if path == "/chunked":
            return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        status = b"500 Internal Server Error" if path == "/fail" else b"200 OK"
        extra = b"Connection: close\r\n" if path == "/close" else b""
        return b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n" + extra + b"\r\nok"

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def tiny() -> Iterator[TinyServer]:
    server = TinyServer()
    yield server
    server.stop()


def spec(server: TinyServer, *paths: str, concurrency: int = 2, count: int = 40, **kwargs) -> LoadSpec:
    requests = tuple(http_request("127.0.0.1", server.port, path, b'{"x": 1}') for path in paths)
    return LoadSpec(
        "127.0.0.1", server.port, requests, concurrency, count, kwargs.pop("seconds", 5.0), **kwargs
    )


def test_every_measured_request_is_counted_and_warm_up_is_not(tiny):
    result = run_load(spec(tiny, "/ok", concurrency=4, count=100, warmup=12))
    assert (result.ok, result.errors, result.statuses) == (100, 0, {"200": 100})
    assert result.warmup_ok == 12
    assert result.rps == pytest.approx(100 / result.elapsed_s)
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms


def test_non_2xx_answers_are_errors_and_have_no_latency(tiny):
    result = run_load(spec(tiny, "/ok", "/fail", concurrency=1, count=40))
    assert result.statuses == {"200": 20, "500": 20}
    assert (result.ok, result.errors) == (20, 20)
    assert result.rps == pytest.approx(20 / result.elapsed_s)


def test_latency_percentiles_see_the_server_delay(tiny):
    result = run_load(spec(tiny, "/slow", concurrency=2, count=20))
    assert result.ok == 20
    assert result.p50_ms >= SLOW_MS * 0.9
    assert result.rps <= 2 / (SLOW_MS / 1e3) * 1.1  # closed loop: at most c requests per delay


def test_the_time_limit_stops_a_run_long_before_its_count(tiny):
    started = time.perf_counter()
    result = run_load(spec(tiny, "/slow", concurrency=2, count=100_000, seconds=0.3))
    assert time.perf_counter() - started < 2.0
    assert 0 < result.ok < 100 and result.errors == 0
    assert result.elapsed_s == pytest.approx(0.3, abs=0.15)


def test_chunked_bodies_and_closed_connections_are_read_whole(tiny):
    result = run_load(spec(tiny, "/chunked", "/close", concurrency=2, count=30))
    assert (result.ok, result.errors) == (30, 0)


def test_a_dropped_connection_is_an_error_and_the_client_reconnects(tiny):
    result = run_load(spec(tiny, "/ok", "/drop", concurrency=1, count=20))
    assert result.statuses == {"200": 10, "conn": 10}
    assert result.errors == 10


def test_the_load_runs_in_a_process_of_its_own(tiny):
    with LoadGenerator() as loadgen:
        result = loadgen.run(spec(tiny, "/ok", concurrency=3, count=30))
    assert (result.ok, result.errors) == (30, 0)


def test_nearest_rank_percentiles():
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_requests_are_complete_http_11_messages():
    request = http_request(
        "127.0.0.1",
        8000,
        "/v2/models/m/infer",
        b"\x00\x01",
        content_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": "0"},
    )
    head, body = request.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v2/models/m/infer HTTP/1.1"
    assert {
        "Host: 127.0.0.1:8000",
        "Content-Length: 2",
        "Content-Type: application/octet-stream",
        "Inference-Header-Content-Length: 0",
    } <= set(lines)
    assert body == b"\x00\x01"


METRICS_BEFORE = """# HELP shipyard_stage_seconds time per stage
shipyard_stage_seconds_sum{model="m",stage="parse"} 1.0
shipyard_stage_seconds_count{model="m",stage="parse"} 10
shipyard_stage_seconds_sum{model="m",stage="run"} 2.0
shipyard_stage_seconds_count{model="m",stage="run"} 10
shipyard_batch_size_sum 10
shipyard_batch_size_count 10
"""
METRICS_AFTER = """shipyard_stage_seconds_sum{model="m",stage="parse"} 1.5
shipyard_stage_seconds_count{model="m",stage="parse"} 110
shipyard_stage_seconds_sum{model="m",stage="run"} 4.0
shipyard_stage_seconds_count{model="m",stage="run"} 30
shipyard_batch_size_sum 110
shipyard_batch_size_count 30
"""


def test_time_split_is_the_mean_over_the_run_only():
    split = serve.time_split(serve.parse_metrics(METRICS_BEFORE), serve.parse_metrics(METRICS_AFTER))
    assert split["parse_ms"] == pytest.approx(0.5 / 100 * 1e3)
    assert split["run_ms"] == pytest.approx(2.0 / 20 * 1e3)
    assert split["mean_batch"] == pytest.approx(100 / 20)
    assert "queue_ms" not in split  # not exposed: left out, not zero
    assert serve.time_split(None, serve.parse_metrics(METRICS_AFTER)) == {}


def row(server: str, model: str, c: int, rps: float, p50: float) -> dict:
    return {"server": server, "model": model, "concurrency": c, "payload": "json", "rps": rps, "p50_ms": p50}


def test_goals_are_ratios_of_rows_from_the_same_run():
    rows = [
        row("naive-fp32", "tabular", 1, 500, 2.0),
        row("shipyard-auto", "tabular", 1, 800, 1.5),
        row("naive-fp32", "tabular", 32, 1000, 30),
        row("shipyard-auto", "tabular", 32, 1400, 20),
        row("naive-fp32", "text", 32, 50, 600),
        row("shipyard-auto", "text", 32, 150, 200),
    ]
    goals = {g["goal"]: g for g in serve.goals(rows, cuda=False)}
    tabular_c1 = goals["c1 p50: shipyard-auto / naive-fp32 (tabular, json)"]
    assert tabular_c1["value"] == pytest.approx(0.75) and tabular_c1["ok"] is True
    tabular_c32 = goals["c32 req/s: shipyard-auto / naive-fp32 (tabular, json)"]
    assert tabular_c32["value"] == pytest.approx(1.4) and tabular_c32["ok"] is False
    assert goals["c32 req/s: shipyard-auto / naive-fp32 (text, json)"]["ok"] is True
    assert goals["c1 p50: shipyard-fp32 / naive-fp32 (text, json)"]["ok"] is None  # not measured
    assert not any("c64" in name for name in goals)  # the GPU goal only where CUDA is active


def test_synthetic_texts_are_sms_sized_and_both_classes():
    frame = serve.synthetic_sms(200, seed=1)
    words = frame["text"].str.split().str.len()
    assert set(frame["label"]) == {"ham", "spam"}
    assert words.min() >= 15 and words.max() <= 25


@pytest.mark.slow
def test_quick_run_measures_every_server_and_payload(tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "serve.json"
    assert serve.main(["--quick", "--cache", str(tmp_path / "cache"), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["models"]["tabular"]["rows"]
    cells = {(r["server"], r["payload"], r["concurrency"]) for r in rows}
    for c in (1, 8):
        assert {
            ("naive-fp32", "json", c),
            ("shipyard-auto", "json", c),
            ("floor-fp32", "in-process", c),
        } <= cells
    for r in rows:
        assert r["errors"] == 0 and r["rps"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"], r
    naive_c1 = next(r for r in rows if (r["server"], r["concurrency"]) == ("naive-fp32", 1))
    assert naive_c1["variant"] == "fp32" and naive_c1["requests"] >= 20
    if sys.platform == "linux":  # server CPU is read from /proc
        assert naive_c1["cpu_ms"] > 0
    assert len(report["goals"]) >= 3
    assert report["models"]["tabular"]["model"]["variants"]["fp32"]["published"]
