"""The server's Prometheus metrics: one registry per app, served as text at GET /metrics.

Every metric the server exposes is declared here, so that later metrics (latency, batching) join the same
registry. A registry per app rather than prometheus-client's global one: two apps in one process (tests,
a reload) never clash over a metric name. Labels carry column names and rule types, never request values.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

OTHER_ROUTE = "other"  # any path the app does not serve: one label value, however many paths are probed


class Metrics:
    """The counters of one server, and their text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "shipyard_requests",
            "HTTP requests answered, by route and status code",
            ["route", "status"],
            registry=self.registry,
        )
        self.input_violations = Counter(
            "shipyard_input_violations",
            "Request values that broke a rule of the model's data contract (serve --validate-inputs)",
            ["column", "rule", "severity"],
            registry=self.registry,
        )

    def count_violations(self, keys: Iterable[tuple[str, str, str]]) -> None:
        """Add one per (column, rule, severity); a batch is tallied first so each label set is hit once."""
        for (column, rule, severity), count in Tally(keys).items():
            self.input_violations.labels(column, rule, severity).inc(count)

    def exposition(self) -> tuple[bytes, str]:
        """The registry in Prometheus' text format, with its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class RequestCounter:
    """ASGI middleware counting every HTTP response by route and status (errors and 404s included)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Iterable[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = frozenset(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in self.routes else OTHER_ROUTE
        status = 500  # what the client gets when the app raises before answering

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
