"""The OpenAPI document: it lists every route, and schemathesis, generating requests from it, gets no 5xx.

The apps run in-process (ASGI), one per family: a generated request costs milliseconds, not a socket. The
generated path names are pointed at the served model, so generated bodies reach the parsers behind the
model lookup instead of stopping at a 404; unknown names get their own test.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.app import create_app
from serving.lifecycle import ServeSettings
from tests.serving.test_families import make_tokenizer, publish_text
from tests.serving.test_serving import publish

MODELS = {"tabular": ("shipyard-model", "v0001"), "text": ("text-model", "v0001")}
OIP_MODEL_ROUTES = ["", "/ready", "/config", "/infer"]
ROUTES = {
    "/v2": "get",
    "/v2/health/live": "get",
    "/v2/health/ready": "get",
    **{f"/v2/models/{{name}}{end}": "post" if end == "/infer" else "get" for end in OIP_MODEL_ROUTES},
    **{
        f"/v2/models/{{name}}/versions/{{version}}{end}": "post" if end == "/infer" else "get"
        for end in OIP_MODEL_ROUTES
    },
    "/v1/models/{name}/predict": "post",
    "/predict": "post",
    "/health": "get",
    "/metrics": "get",
}
EXAMPLES, THOROUGH_EXAMPLES = 30, 100  # per operation and family: every run, and the slow run
POST_ROUTES = [(path, method) for path, method in ROUTES.items() if method == "post"]
STATUSES: dict[str, dict[str, Counter[int]]] = {"tabular": defaultdict(Counter), "text": defaultdict(Counter)}


def serve(registry: Path) -> FastAPI:
    """A 5 s request timeout: a request stuck in the server fails fast, as a 503, instead of hanging."""
    return create_app(registry, ServeSettings(prefer_gpu=False, reload_interval=0, timeout=5))


@pytest.fixture(scope="module")
def tabular_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    registry = tmp_path_factory.mktemp("tabular")
    publish(registry, [0, 1, 2])
    app = serve(registry)
    yield app
    app.state.shipyard.close()


@pytest.fixture(scope="module")
def text_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    registry = tmp_path_factory.mktemp("text")
    publish_text(registry, make_tokenizer())
    app = serve(registry)
    yield app
    app.state.shipyard.close()


def without_lifespan(app: ASGIApp) -> ASGIApp:
    """The app as schemathesis calls it, without its lifespan (which the module's fixture owns).

    schemathesis' pytest plugin ends every ASGI lifespan it started at each test's teardown, and the server's
    lifespan shutdown closes its batcher for good (test_a_restarted_lifespan_serves_again), so every later
    inference request would wait for its timeout.
    """

    async def app_without_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return  # refused before any message: to the caller, an app without lifespan support
        await app(scope, receive, send)

    return app_without_lifespan


@pytest.fixture(scope="module")
def schemas(tabular_app: FastAPI, text_app: FastAPI) -> dict[str, Any]:
    """Each app's own document, loaded by schemathesis from the app (in-process ASGI calls)."""
    return {
        family: schemathesis.openapi.from_asgi("/openapi.json", without_lifespan(app))
        for family, app in (("tabular", tabular_app), ("text", text_app))
    }


def no_traceback(ctx: Any, response: Any, case: Any) -> None:
    """No response, whatever the request, shows a traceback."""
    assert "Traceback" not in response.text, f"{case.method} {case.formatted_path}: {response.text[:300]}"


def call_on_the_model(case: Any, family: str) -> None:
    """Aim the case at the served model and version, call it, check it, and count its status."""
    name, version = MODELS[family]
    if "name" in case.path_parameters:
        case.path_parameters["name"] = name
    if "version" in case.path_parameters:
        case.path_parameters["version"] = version
    if case.query and "version" in case.query:  # unversioned routes document ?version= too
        case.query["version"] = version
    response = case.call_and_validate(checks=[not_a_server_error, no_traceback])
    STATUSES[family][f"{case.method} {case.operation.path}"][response.status_code] += 1


# ---- the document


def test_the_document_lists_every_route(tabular_app: FastAPI) -> None:
    document = TestClient(tabular_app).get("/openapi.json").json()
    listed = {path: set(methods) for path, methods in document["paths"].items()}
    assert listed == {path: {method} for path, method in ROUTES.items()}
    infer = document["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/octet-stream"} <= set(infer)
    predict = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert "records" in predict["example"]


def test_a_text_document_shows_a_text_example(text_app: FastAPI) -> None:
    document = TestClient(text_app).get("/openapi.json").json()
    predict = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert "texts" in predict["example"]


@pytest.mark.parametrize("family", ["tabular", "text"])
def test_unknown_models_and_versions_are_404_on_every_model_route(
    family: str, tabular_app: FastAPI, text_app: FastAPI
) -> None:
    client = TestClient({"tabular": tabular_app, "text": text_app}[family])
    name, version = MODELS[family]
    for path, method in ROUTES.items():
        unknown = []
        if "{name}" in path:
            unknown.append(path.format(name="nope", version=version))
        if "{version}" in path:
            unknown.append(path.format(name=name, version="v9"))
        for url in unknown:
            response = client.request(method, url, json={})
            assert response.status_code == 404, (url, response.text)
            assert "nope" in response.text or "v9" in response.text


def test_a_restarted_lifespan_serves_again(tmp_path: Path) -> None:
    """An app's lifespan may run more than once (a TestClient entered twice; schemathesis' pytest plugin ends
    it after every test): after a shutdown and a new startup the app answers inference again."""
    publish(tmp_path, [0, 1, 2])
    app = create_app(tmp_path, ServeSettings(prefer_gpu=False, reload_interval=0, timeout=2))
    body = {"records": [{"mean radius": 1.0, "b": 2.0, "colour": "red"}]}
    for lifespan in ("first", "second"):
        with TestClient(app) as client:
            response = client.post("/predict", json=body)
            assert response.status_code == 200, (lifespan, response.status_code, response.text)
    app.state.shipyard.close()


# ---- schemathesis: no 5xx for any request the document allows, or nearly allows


def cases(schema: Any, path: str, method: str) -> SearchStrategy[Any]:
    """Requests for one operation: its documented examples, valid requests and invalid ones.

    schemathesis' own pytest loader for fixtures (`schemathesis.pytest.from_fixture`) fails on pytest 9.2
    (it reads `Function._nodeid`, which pytest removed), so the cases come from its public strategies.
    """
    operation = schema[path][method]
    return st.one_of(
        *schema.get_strategies_from_examples(operation),
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )


def fuzz(schema: Any, family: str, path: str, method: str, examples: int) -> None:
    """Send `examples` generated requests (plus the documented examples) to one operation."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,  # nothing written under the working tree
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases(schema, path, method))
    def call(case: Any) -> None:
        call_on_the_model(case, family)

    call()


@pytest.mark.parametrize("family", ["tabular", "text"])
@pytest.mark.parametrize(("path", "method"), ROUTES.items(), ids=[f"{m} {p}" for p, m in ROUTES.items()])
def test_no_server_errors(schemas: dict[str, Any], family: str, path: str, method: str) -> None:
    fuzz(schemas[family], family, path, method, EXAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["tabular", "text"])
@pytest.mark.parametrize(("path", "method"), POST_ROUTES, ids=[f"{m} {p}" for p, m in POST_ROUTES])
def test_no_server_errors_thoroughly(schemas: dict[str, Any], family: str, path: str, method: str) -> None:
    fuzz(schemas[family], family, path, method, THOROUGH_EXAMPLES)


@pytest.mark.parametrize("family", ["tabular", "text"])
def test_the_generated_bodies_reached_the_parsers(family: str) -> None:
    """The runs above sent bodies past the model lookup: the parsers refused some and answered others."""
    seen = STATUSES[family]
    if not seen:
        pytest.skip("test_no_server_errors did not run in this session")
    for route in ("POST /v2/models/{name}/infer", "POST /v2/models/{name}/versions/{version}/infer"):
        assert seen[route][400] > 0, (route, seen[route])
        assert 404 not in seen[route] and not any(status >= 500 for status in seen[route]), seen[route]
    for route in ("POST /predict", "POST /v1/models/{name}/predict"):
        assert seen[route][200] > 0 and any(400 <= status < 500 for status in seen[route]), seen[route]
