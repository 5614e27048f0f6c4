"""A lean closed-loop HTTP/1.1 load generator for loopback benchmarks.

C keep-alive connections each send a prebuilt request (raw bytes) and wait for the whole response before
sending the next: the offered load follows the server, as a pool of blocking clients would. A run is
bounded by a request count AND a time limit; warm-up requests come first and are discarded. Latency is
taken per request with perf_counter_ns; a non-2xx answer, a dropped connection or a request still
unanswered after the grace period is an error.

It shares the machine's cores with the server it measures, so it does as little as it can: asyncio (uvloop
when importable) with a bare asyncio.Protocol that reads only the status line, Content-Length (or chunked
framing) and the body, and it runs in a process of its own (`LoadGenerator`) so it never shares a GIL with
anything measured. Standard library only (uvloop optional).
"""

from __future__ import annotations

import asyncio
import gc
import math
import multiprocessing
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any

GRACE_S = 10.0  # after the time limit, how long in-flight requests may still take before they are errors
HEAD_END = b"\r\n\r\n"


@dataclass(frozen=True)
class LoadSpec:
    """One closed-loop run: where, what (requests cycled per connection), how many, how long."""

    host: str
    port: int
    requests: tuple[bytes, ...]
    concurrency: int
    count: int  # measured requests, at most
    seconds: float  # measured phase's time limit
    warmup: int = 0  # requests sent first and discarded
    warmup_seconds: float = 5.0
    grace_s: float = GRACE_S


@dataclass
class LoadResult:
    """What one run measured; latencies are of the 2xx answers only."""

    concurrency: int
    ok: int
    errors: int
    elapsed_s: float
    statuses: dict[str, int] = field(default_factory=dict)  # "200", "503", "conn", "timeout"
    rps: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    max_ms: float | None = None
    warmup_ok: int = 0
    loadgen_cpu_s: float = 0.0  # the generator's own CPU time in the measured phase (it shares the cores)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def http_request(
    host: str,
    port: int,
    path: str,
    body: bytes = b"",
    method: str = "POST",
    content_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """A complete HTTP/1.1 keep-alive request as bytes, built once and sent many times."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    if body or method == "POST":
        lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def percentile(sorted_values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile of ascending values (p99 of 100 values is the 99th); None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class ResponseError(Exception):
    """The connection broke or the server sent something that is not an HTTP/1.1 response."""


class Connection(asyncio.Protocol):
    """One keep-alive connection: write a request, resolve a future with the status when the body is in."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[int] | None = None
        self.closing = False  # the server said Connection: close

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(ResponseError(f"connection lost: {exc or 'closed by the server'}"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is not None and not self.waiter.done():
            try:
                status = self._take_response()
            except (ResponseError, ValueError) as err:  # ValueError: a malformed length or status
                self._fail(ResponseError(str(err)))
                return
            if status is not None:
                self.waiter.set_result(status)

    def exchange(self, request: bytes) -> asyncio.Future[int]:
        """Send the request; the future resolves with the response's status code."""
        if self.transport is None or self.closing:
            raise ResponseError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _fail(self, err: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(err)

    def _take_response(self) -> int | None:
        """The status of a complete response at the buffer's head (removed from it), or None if partial."""
        end = self.buffer.find(HEAD_END)
        if end < 0:
            return None
        head = bytes(self.buffer[:end]).lower()
        if not head.startswith(b"http/1."):
            raise ResponseError(f"not an HTTP/1.x response: {head[:40]!r}")
        status = int(head[9:12])
        start = end + 4
        length = header_value(head, b"content-length")
        if length is not None:
            stop = start + int(length)
            if len(self.buffer) < stop:
                return None
        elif header_value(head, b"transfer-encoding") == b"chunked":
            stop = chunked_end(self.buffer, start)
            if stop is None:
                return None
        else:
            stop = start  # 1xx/204/304 or a body ended by close: nothing more to wait for here
        del self.buffer[:stop]
        self.closing = header_value(head, b"connection") == b"close"
        return status


def header_value(head: bytes, name: bytes) -> bytes | None:
    """A header's stripped value from a lowercased response head, or None."""
    key = b"\r\n" + name + b":"
    at = head.find(key)
    if at < 0:
        return None
    stop = head.find(b"\r\n", at + len(key))
    return head[at + len(key) : stop if stop >= 0 else len(head)].strip()


def chunked_end(buffer: bytearray, start: int) -> int | None:
    """Where a chunked body starting at `start` ends (after its last CRLF), or None if not all here."""
    at = start
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None
        size = int(bytes(buffer[at:line_end]).split(b";")[0], 16)
        at = line_end + 2
        if size == 0:
            trailer_end = buffer.find(HEAD_END, at - 2)
            return None if trailer_end < 0 else trailer_end + 4
        at += size + 2
        if len(buffer) < at:
            return None


@dataclass
class Phase:
    """A shared budget of requests and time; `recording` keeps latencies (the measured phase)."""

    count: int
    deadline_ns: int
    recording: bool
    issued: int = 0
    latencies: list[int] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    def take(self) -> bool:
        if self.issued >= self.count or time.perf_counter_ns() >= self.deadline_ns:
            return False
        self.issued += 1
        return True


class Client:
    """One connection's closed loop; reconnects after a broken or closed connection."""

    def __init__(self, spec: LoadSpec, offset: int) -> None:
        self.spec = spec
        self.next = offset
        self.connection: Connection | None = None

    async def connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(Connection, self.spec.host, self.spec.port)
        return protocol

    async def run(self, phase: Phase) -> None:
        requests = self.spec.requests
        while phase.take():
            request = requests[self.next % len(requests)]
            self.next += 1
            try:
                if self.connection is None or self.connection.transport is None or self.connection.closing:
                    self.drop()
                    self.connection = await self.connect()
                started = time.perf_counter_ns()
                status = await self.connection.exchange(request)
                took = time.perf_counter_ns() - started
            except (OSError, ResponseError):
                phase.statuses["conn"] += 1
                self.drop()
                continue
            phase.statuses[str(status)] += 1
            if phase.recording and 200 <= status < 300:
                phase.latencies.append(took)

    def drop(self) -> None:
        if self.connection is not None:
            self.connection.close()
        self.connection = None


async def run_phase(
    clients: Sequence[Client], count: int, seconds: float, grace_s: float, record: bool
) -> tuple[Phase, float]:
    """Run every client until the phase's budget is spent; requests unanswered after grace are errors."""
    started = time.perf_counter_ns()
    phase = Phase(count, started + int(seconds * 1e9), record)
    tasks = [asyncio.ensure_future(client.run(phase)) for client in clients]
    _, pending = await asyncio.wait(tasks, timeout=seconds + grace_s)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
        phase.statuses["timeout"] += len(pending)
        for client, task in zip(clients, tasks, strict=True):
            if task in pending:
                client.drop()
    return phase, (time.perf_counter_ns() - started) / 1e9


async def closed_loop(spec: LoadSpec) -> LoadResult:
    """Warm up, then measure; connections are opened before the clock starts and kept across phases."""
    if spec.concurrency < 1 or not spec.requests:
        raise ValueError("a load run needs concurrency >= 1 and at least one request")
    clients = [Client(spec, offset) for offset in range(spec.concurrency)]
    for client in clients:
        try:
            client.connection = await client.connect()
        except OSError as err:
            raise ConnectionError(f"cannot connect to {spec.host}:{spec.port}: {err}") from None
    warm, _ = await run_phase(clients, spec.warmup, spec.warmup_seconds, spec.grace_s, record=False)
    cpu = time.process_time()
    phase, elapsed = await run_phase(clients, spec.count, spec.seconds, spec.grace_s, record=True)
    cpu = time.process_time() - cpu
    for client in clients:
        client.drop()
    result = summarise(spec.concurrency, phase, elapsed, warm.statuses)
    result.loadgen_cpu_s = cpu
    return result


def summarise(concurrency: int, phase: Phase, elapsed_s: float, warm: Counter[str]) -> LoadResult:
    latencies = sorted(ns / 1e6 for ns in phase.latencies)
    ok = len(latencies)
    answered = sum(phase.statuses.values())
    return LoadResult(
        concurrency=concurrency,
        ok=ok,
        errors=answered - ok,
        elapsed_s=elapsed_s,
        statuses=dict(sorted(phase.statuses.items())),
        rps=ok / elapsed_s if elapsed_s > 0 else 0.0,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        mean_ms=sum(latencies) / ok if ok else None,
        max_ms=latencies[-1] if latencies else None,
        warmup_ok=sum(n for status, n in warm.items() if status.startswith("2")),
    )


def run_load(spec: LoadSpec) -> LoadResult:
    """One run on a fresh event loop (uvloop when importable); the garbage collector is off meanwhile."""
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    gc.disable()
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(closed_loop(spec))
    finally:
        gc.enable()


class LoadGenerator:
    """`run_load` in one spawned worker process, kept for all runs of a benchmark (a context manager)."""

    def __init__(self) -> None:
        self.pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))

    def run(self, spec: LoadSpec) -> LoadResult:
        return self.pool.submit(run_load, spec).result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
