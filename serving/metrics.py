"""The server's Prometheus metrics: one registry per app, served as text at GET /metrics.

Every metric the server exposes is declared here. A registry per app rather than prometheus-client's global
one: two apps in one process (tests, a reload) never clash over a metric name. Labels carry route
templates, column names and rule types, never request values.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.batching import BatchStats

OTHER_ROUTE = "other"  # any path the app does not serve: one label value, however many paths are probed
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)
STAGE_BUCKETS = (0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The metrics of one server, and their text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "shipyard_requests",
            "HTTP requests answered, by route and status code",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "shipyard_request_duration_seconds",
            "Time from the request's arrival to the end of its response, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stages = Histogram(
            "shipyard_stage_seconds",
            "Where an inference request's time goes: parse (body to model inputs), queue (waiting for the "
            "model), run (the batch it ran in), serialise (outputs to the response body)",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "shipyard_batch_size",
            "Rows per onnxruntime run (dynamic batching)",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "shipyard_queue_depth",
            "Requests waiting for the model",
            registry=self.registry,
        )
        self.model_info = Gauge(
            "shipyard_model_info",
            "The version being served (1), with its variant and the execution provider really active",
            ["name", "version", "variant", "provider"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "shipyard_reloads",
            "Production versions the server tried to hot-load, by outcome (loaded or rejected)",
            ["outcome"],
            registry=self.registry,
        )
        self.input_violations = Counter(
            "shipyard_input_violations",
            "Request values that broke a rule of the model's data contract (serve --validate-inputs)",
            ["column", "rule", "severity"],
            registry=self.registry,
        )
        self._parse, self._queue, self._run, self._serialise = (
            self.stages.labels(stage) for stage in ("parse", "queue", "run", "serialise")
        )

    def watch_queue(self, depth: Callable[[], int]) -> None:
        """Read the queue depth from `depth` at each scrape."""
        self.queue_depth.set_function(depth)

    def serving(self, name: str, version: str, variant: str, provider: str) -> None:
        """Make this version the one model_info reports."""
        self.model_info.clear()
        self.model_info.labels(name, version, variant, provider).set(1)

    def count_batch(self, stats: BatchStats) -> None:
        """Called by the batcher after each run (on its thread)."""
        self.batch_size.observe(stats.rows)
        self._run.observe(stats.run)
        for wait in stats.waits:
            self._queue.observe(wait)

    def count_request(self, parse: float, serialise: float) -> None:
        self._parse.observe(parse)
        self._serialise.observe(serialise)

    def count_violations(self, keys: Iterable[tuple[str, str, str]]) -> None:
        """Add one per (column, rule, severity); a batch is tallied first so each label set is hit once."""
        for (column, rule, severity), count in Tally(keys).items():
            self.input_violations.labels(column, rule, severity).inc(count)

    def exposition(self) -> tuple[bytes, str]:
        """The registry in Prometheus' text format, with its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class RequestCounter:
    """ASGI middleware counting every HTTP response by route template and status, and timing it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            label = getattr(scope.get("route"), "path", OTHER_ROUTE)  # the router sets the matched route
            self.metrics.requests.labels(label, str(status)).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - started)
