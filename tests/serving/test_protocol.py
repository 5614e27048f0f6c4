"""The server's protocol surface against real server processes: tritonclient (OIP v2 over HTTP, JSON and
binary tensors), malformed and generated tensors, concurrent batching without cross-talk, Prometheus
/metrics, and the API key.

Two servers for the module, each started once: the tabular model without an API key and the text model
with one. A client such as tritonclient must work against the process a user runs, not only against an
in-process app.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from tokenizers import Tokenizer
from tritonclient.utils import InferenceServerException

from tasks.config import ServeParams
from tests.serving.live import LiveServer, live_server
from tests.serving.test_families import make_tokenizer, publish_text, text_expected
from tests.serving.test_serving import FILLS, RECORDS, expected, publish

MODEL, VERSION = "shipyard-model", "v0001"
TEXT_MODEL = "text-model"
LABELS = [0, 1, 2]
KEY = "test-key-7f3a"  # distinctive: a response that echoes it is caught
INFER_ROUTE = "/v2/models/{name}/infer"
RNG = np.random.default_rng(5)


@dataclass
class Tabular:
    server: LiveServer
    weights: np.ndarray
    bias: np.ndarray

    def client(self) -> triton.InferenceServerClient:
        return triton.InferenceServerClient(self.server.url.removeprefix("http://"))

    def expected(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The tiny model in numpy on already-encoded rows: logits and probabilities."""
        filled = np.where(np.isnan(features), np.float32([*FILLS, 0.0]), features).astype(np.float32)
        logits = filled @ self.weights + self.bias
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return logits, exp / exp.sum(axis=1, keepdims=True)


@dataclass
class Text:
    server: LiveServer
    tokenizer: Tokenizer
    arrays: tuple[np.ndarray, ...]

    def client(self) -> triton.InferenceServerClient:
        return triton.InferenceServerClient(self.server.url.removeprefix("http://"))


# ---- servers, one per kind for the module


@pytest.fixture(scope="module")
def tabular(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tabular]:
    registry = tmp_path_factory.mktemp("tabular") / "registry"
    weights, bias = publish(registry, LABELS)
    # a 20 ms window and no inline answers make batching certain
    options = ["--max-wait-ms", "20", "--inline-below-ms", "0", "--reload-interval-s", "0"]
    with live_server(registry, *options) as server:
        yield Tabular(server, weights, bias)


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Text]:
    """The text model behind an API key: every text call also shows that the right token is let in."""
    registry = tmp_path_factory.mktemp("text") / "registry"
    registry.mkdir()
    tokenizer = make_tokenizer()
    arrays = publish_text(registry, tokenizer)
    with live_server(registry, "--reload-interval-s", "0", env={"SHIPYARD_API_KEY": KEY}) as server:
        yield Text(server, tokenizer, arrays)


# ---- helpers


def auth() -> dict[str, str]:
    """The granted header, a new dict per call: tritonclient writes its own headers into the one it gets."""
    return {"Authorization": f"Bearer {KEY}"}


def features_of(records: list[dict[str, Any]]) -> np.ndarray:
    """Records encoded as the model's input rows, as /predict encodes them (colour: 0 unseen, 1 + index)."""
    colours = ["blue", "red"]
    rows = [
        [
            np.nan if r["mean radius"] in (None, "") else float(r["mean radius"]),
            np.nan if r["b"] in (None, "") else float(r["b"]),
            colours.index(r["colour"]) + 1 if r["colour"] in colours else 0,
        ]
        for r in records
    ]
    return np.asarray(rows, np.float32)


def feature_input(features: np.ndarray, binary: bool = True, datatype: str = "FP32") -> triton.InferInput:
    tensor = triton.InferInput("features", list(features.shape), datatype)
    tensor.set_data_from_numpy(features, binary_data=binary)
    return tensor


def outputs(*names: str, binary: bool = True) -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput(name, binary_data=binary) for name in names]


def rejection(call: Any) -> InferenceServerException:
    """The InferenceServerException a tritonclient call raises (fails the test if it does not)."""
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def scrape(url: str) -> dict[str, list[Any]]:
    """/metrics as {sample name: [samples]}, read with prometheus-client's own parser."""
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list[Any]], metric: str, /, **labels: str) -> float:
    """The value of the one sample with these labels (a KeyError names what was there instead)."""
    found = [s.value for s in samples.get(metric, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    if len(found) != 1:
        raise KeyError(f"{metric}{labels}: {len(found)} samples in {samples.get(metric)}")
    return found[0]


# ---- metadata and health through tritonclient


def test_health_and_server_metadata(tabular: Tabular) -> None:
    client = tabular.client()
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, VERSION)
    assert not client.is_model_ready("no-such-model") and not client.is_model_ready(MODEL, "v9999")
    metadata = client.get_server_metadata()
    assert metadata["name"] == "shipyard" and "binary_tensor_data" in metadata["extensions"]


def test_model_metadata_and_config_of_a_tabular_model(tabular: Tabular) -> None:
    client = tabular.client()
    for version in ("", VERSION):
        metadata = client.get_model_metadata(MODEL, version)
        assert metadata["name"] == MODEL and metadata["versions"] == [VERSION]
        assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 3]}]
        assert [(o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]] == [
            ("logits", "FP32", [-1, 3]),
            ("probabilities", "FP32", [-1, 3]),
        ]
    config = client.get_model_config(MODEL)
    assert config["max_batch_size"] == ServeParams().max_batch_size
    assert config["input"] == [{"name": "features", "data_type": "TYPE_FP32", "dims": [3]}]


def test_model_metadata_of_a_text_model(text: Text) -> None:
    client = text.client()  # metadata needs no API key
    metadata = client.get_model_metadata(TEXT_MODEL)
    assert metadata["versions"] == [VERSION]
    assert metadata["inputs"] == [
        {"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]},
        {"name": "attention_mask", "datatype": "INT64", "shape": [-1, -1]},
    ]
    config = client.get_model_config(TEXT_MODEL)
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [
        ("input_ids", "TYPE_INT64", [-1]),
        ("attention_mask", "TYPE_INT64", [-1]),
    ]


def test_unknown_model_and_version_are_404(tabular: Tabular) -> None:
    client = tabular.client()
    features = features_of(RECORDS[:2])
    for call in (
        lambda: client.get_model_metadata("no-such-model"),
        lambda: client.get_model_metadata(MODEL, "v9999"),
        lambda: client.infer("no-such-model", [feature_input(features)]),
        lambda: client.infer(MODEL, [feature_input(features)], model_version="v9999"),
    ):
        error = rejection(call)
        assert error.status() == "404", error
        assert "no-such-model" in error.message() or "v9999" in error.message()


# ---- inference round trips


@pytest.mark.parametrize(
    ("binary_in", "binary_out", "version"),
    [(True, True, ""), (False, True, VERSION), (True, False, VERSION), (False, False, "")],
    ids=["binary", "json-in", "json-out", "json"],
)
def test_infer_round_trip_equals_numpy(
    tabular: Tabular, binary_in: bool, binary_out: bool, version: str
) -> None:
    features = features_of(RECORDS)
    result = tabular.client().infer(
        MODEL,
        [feature_input(features, binary_in)],
        model_version=version,
        outputs=outputs("logits", "probabilities", binary=binary_out),
    )
    logits, probabilities = tabular.expected(features)
    np.testing.assert_allclose(result.as_numpy("logits"), logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probabilities, expected(RECORDS, tabular.weights, tabular.bias), atol=1e-6)
    response = result.get_response()
    assert (response["model_name"], response["model_version"]) == (MODEL, VERSION)


def test_default_outputs_and_one_requested_output(tabular: Tabular) -> None:
    client, features = tabular.client(), features_of(RECORDS[:3])
    logits, probabilities = tabular.expected(features)
    every = client.infer(MODEL, [feature_input(features)])  # no outputs named: all of them, binary
    np.testing.assert_allclose(every.as_numpy("logits"), logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(every.as_numpy("probabilities"), probabilities, atol=1e-6)
    one = client.infer(MODEL, [feature_input(features)], outputs=outputs("probabilities", binary=False))
    assert [o["name"] for o in one.get_response()["outputs"]] == ["probabilities"]
    assert one.as_numpy("logits") is None
    np.testing.assert_allclose(one.as_numpy("probabilities"), probabilities, atol=1e-6)


def test_oip_answers_as_predict_does_for_the_same_rows(tabular: Tabular) -> None:
    predicted = httpx.post(f"{tabular.server.url}/predict", json={"records": RECORDS}, timeout=10)
    assert predicted.status_code == 200, predicted.text
    want = [list(p["probabilities"].values()) for p in predicted.json()["predictions"]]
    result = tabular.client().infer(MODEL, [feature_input(features_of(RECORDS))])
    np.testing.assert_allclose(result.as_numpy("probabilities"), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_nan_is_a_missing_value_and_inf_is_refused(tabular: Tabular, binary: bool) -> None:
    client = tabular.client()
    features = np.array([[np.nan, 1.0, 2.0], [3.0, np.nan, np.nan]], np.float32)
    result = client.infer(MODEL, [feature_input(features, binary)])
    np.testing.assert_allclose(result.as_numpy("probabilities"), tabular.expected(features)[1], atol=1e-6)
    features[1, 1] = np.inf
    error = rejection(lambda: client.infer(MODEL, [feature_input(features, binary)]))
    assert error.status() == "400" and "'features'" in error.message() and "Inf" in error.message(), error
    assert "[1, 1]" in error.message(), error


def text_inputs(
    tokenizer: Tokenizer, sentences: list[str]
) -> tuple[tuple[np.ndarray, np.ndarray], list[triton.InferInput]]:
    """Token ids and mask for the sentences, as arrays and as tritonclient inputs."""
    encodings = tokenizer.encode_batch(sentences)
    ids = np.array([e.ids for e in encodings], np.int64)
    mask = np.array([e.attention_mask for e in encodings], np.int64)
    tensors = []
    for name, array in [("input_ids", ids), ("attention_mask", mask)]:
        tensor = triton.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return (ids, mask), tensors


def test_a_text_model_through_tritonclient(text: Text) -> None:
    sentences = ["the cat sat on the mat", "a dog", "eels swim in the dark sea and the park"]
    (ids, mask), tensors = text_inputs(text.tokenizer, sentences)
    client = text.client()
    result = client.infer(TEXT_MODEL, tensors, outputs=outputs("probabilities"), headers=auth())
    want = text_expected(ids, mask, text.arrays)
    np.testing.assert_allclose(result.as_numpy("probabilities"), want, rtol=1e-5, atol=1e-6)
    predicted = httpx.post(
        f"{text.server.url}/predict", json={"texts": sentences}, headers=auth(), timeout=10
    )
    assert predicted.status_code == 200, predicted.text
    got = [list(p["probabilities"].values()) for p in predicted.json()["predictions"]]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    missing = rejection(lambda: client.infer(TEXT_MODEL, tensors[:1], headers=auth()))
    assert missing.status() == "400" and "'attention_mask'" in missing.message(), missing


# ---- malformed requests through tritonclient


def _unknown_input() -> list[triton.InferInput]:
    extra = triton.InferInput("colour", [2, 1], "FP32")
    extra.set_data_from_numpy(np.zeros((2, 1), np.float32))
    return [feature_input(features_of(RECORDS[:2])), extra]


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        (lambda: [feature_input(np.zeros((2, 4), np.float32))], ["'features'", "shape"]),
        (lambda: [feature_input(np.zeros((2, 3)), datatype="FP64")], ["'features'", "FP64", "FP32"]),
        (lambda: [feature_input(np.zeros((2, 3), np.int32), datatype="INT32")], ["'features'", "INT32"]),
        (lambda: [], ["'features'", "missing"]),
        (_unknown_input, ["colour", "unknown input"]),
    ],
    ids=["shape", "fp64", "int32", "missing", "unknown"],
)
def test_malformed_requests_are_400_naming_the_input(tabular: Tabular, inputs: Any, words: list[str]) -> None:
    error = rejection(lambda: tabular.client().infer(MODEL, inputs()))
    assert error.status() == "400", error
    assert all(word in error.message() for word in words), error.message()
    assert "Traceback" not in error.message()


# ---- batching under concurrent clients: each answer is its own


def test_concurrent_requests_are_batched_without_cross_talk(tabular: Tabular) -> None:
    """16 clients at once, each checking that its answers are its own rows' (batches are split back right).

    One tritonclient per thread: its async_infer sleeps 10 ms after sending each request, so on a model
    this fast one client's requests never overlap.
    """
    clients, per_client = 16, 6
    rows = [[int(n) for n in RNG.integers(1, 4, size=per_client)] for _ in range(clients)]
    features = [[RNG.normal(size=(n, 3)).astype(np.float32) * 5 for n in mine] for mine in rows]

    def send(requests: list[np.ndarray]) -> list[tuple[np.ndarray, Any]]:
        with tabular.client() as client:
            return [(x, client.infer(MODEL, [feature_input(x)])) for x in requests]

    before = scrape(tabular.server.url)
    with ThreadPoolExecutor(clients) as pool:
        answered = [pair for pairs in pool.map(send, features) for pair in pairs]
    after = scrape(tabular.server.url)
    for sent, result in answered:
        logits, probabilities = tabular.expected(sent)
        np.testing.assert_allclose(result.as_numpy("logits"), logits, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, atol=1e-6)
    runs = value(after, "shipyard_batch_size_count") - value(before, "shipyard_batch_size_count")
    total = value(after, "shipyard_batch_size_sum") - value(before, "shipyard_batch_size_sum")
    assert len(answered) == clients * per_client
    assert total == sum(map(sum, rows))  # every row ran exactly once
    assert runs < len(answered) / 2, f"{len(answered)} requests ran in {runs:g} batches: too few were batched"


def test_an_unknown_token_id_is_a_400_and_fails_no_other_request(text: Text) -> None:
    """Ids outside the model's vocabulary must be refused at parse time: run in a batch they would fail
    every request batched with them, not just their own."""
    (ids, mask), good = text_inputs(text.tokenizer, ["the cat sat on the mat"])
    want = text_expected(ids, mask, text.arrays)
    vocabulary = text.tokenizer.get_vocab_size()

    def bad_inputs(token: int) -> list[triton.InferInput]:
        tensors = text_inputs(text.tokenizer, ["the cat sat on the mat"])[1]
        tensors[0].set_data_from_numpy(np.where(np.arange(ids.shape[1]) == 1, token, ids).astype(np.int64))
        return tensors

    def send(job: int) -> tuple[int, str, Any]:
        token = [vocabulary, -1, 10**6][job % 3] if job % 2 else None
        with text.client() as client:
            try:
                inputs = good if token is None else bad_inputs(token)
                return 200, "", client.infer(TEXT_MODEL, inputs, headers=auth()).as_numpy("probabilities")
            except InferenceServerException as err:
                return int(err.status() or 0), err.message() or "", token

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(48)))
    for job, (status, message, got) in enumerate(answers):
        if job % 2:
            assert status == 400 and "'input_ids'" in message, (job, status, message)
        else:
            assert status == 200, (job, status, message)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ---- generated tensors: near what the model takes


QUIET = [Phase.explicit, Phase.generate, Phase.shrink]  # no example database, no "explain" noise

FAMILY_INPUT_VALUES = {
    "FP32": st.floats(-10, 10, width=32)
    | st.sampled_from([math.nan, math.inf, -math.inf])
    | st.floats(width=32),
    "INT64": st.integers(-2, 30) | st.integers(-(2**63), 2**63 - 1),
    "BOOL": st.booleans(),
}


@st.composite
def near_valid_requests(draw: st.DrawFn, metadata: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """An OIP JSON request with the model's input names, mostly its datatypes and shapes, small batches
    and values from anywhere in a datatype's range: (rows, request)."""
    rows, width = draw(st.integers(0, 4)), draw(st.integers(0, 6))
    inputs = []
    for spec in metadata["inputs"]:
        datatype = draw(st.sampled_from([spec["datatype"]] * 4 + list(FAMILY_INPUT_VALUES)))
        shape = [rows, *(dim if dim >= 0 else width for dim in spec["shape"][1:])]
        if draw(st.integers(0, 9)) == 0:
            shape = draw(st.lists(st.integers(0, 4), max_size=3))
        count = int(np.prod(shape)) + draw(st.sampled_from([0] * 9 + [1, -1]))
        data = draw(st.lists(FAMILY_INPUT_VALUES[datatype], min_size=max(count, 0), max_size=max(count, 0)))
        inputs.append({"name": spec["name"], "datatype": datatype, "shape": shape, "data": data})
    names = [o["name"] for o in metadata["outputs"]]
    wanted = draw(st.lists(st.sampled_from([*names, "nope"]), max_size=2, unique=True))
    outputs = [{"name": n, "parameters": {"binary_data": False}} for n in wanted]
    return rows, {"inputs": draw(st.permutations(inputs)), "outputs": outputs}


def check_answer(response: httpx.Response, rows: int, request: dict[str, Any]) -> None:
    """A 400 that says what is wrong, or a 200 with one finite probability row per input row."""
    assert response.status_code in (200, 400), (response.status_code, response.text[:300])
    body = response.json()
    if response.status_code == 400:
        assert body["error"] and "Traceback" not in body["error"]
        return
    outputs = {o["name"]: o for o in body["outputs"]}
    assert set(outputs) == ({o["name"] for o in request["outputs"]} or {"logits", "probabilities"})
    for output in outputs.values():
        assert output["shape"] == [rows, 3] and len(output["data"]) == rows * 3
    if "probabilities" in outputs:
        probabilities = np.array(outputs["probabilities"]["data"], dtype=float).reshape(rows, 3)  # null: NaN
        assert np.isfinite(probabilities).all(), (request, probabilities)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("family", ["tabular", "text"])
def test_near_valid_tensors_get_an_answer_or_a_400(tabular: Tabular, text: Text, family: str) -> None:
    server, model, headers = (
        (tabular.server, MODEL, {}) if family == "tabular" else (text.server, TEXT_MODEL, auth())
    )
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
        metadata = client.get(f"/v2/models/{model}").json()

        @settings(
            max_examples=60, deadline=None, database=None, phases=QUIET, suppress_health_check=[*HealthCheck]
        )
        @given(near_valid_requests(metadata))
        def send(generated: tuple[int, dict[str, Any]]) -> None:
            rows, request = generated
            body = json.dumps(request).encode()  # NaN and Infinity written as tritonclient writes them
            response = client.post(
                f"/v2/models/{model}/infer", content=body, headers={"content-type": "application/json"}
            )
            check_answer(response, rows, request)

        send()


# ---- /metrics


def test_metrics_count_requests_latency_stages_queue_and_model(tabular: Tabular) -> None:
    client = tabular.client()
    for _ in range(3):
        client.infer(MODEL, [feature_input(features_of(RECORDS[:2]))])
    samples = scrape(tabular.server.url)
    assert value(samples, "shipyard_requests_total", route=INFER_ROUTE, status="200") >= 3
    latency = value(samples, "shipyard_request_duration_seconds_bucket", route=INFER_ROUTE, le="+Inf")
    assert latency >= 3
    assert value(samples, "shipyard_request_duration_seconds_count", route=INFER_ROUTE) == latency
    for stage in ("parse", "queue", "run", "serialise"):
        assert value(samples, "shipyard_stage_seconds_count", stage=stage) >= 3, stage
    assert value(samples, "shipyard_queue_depth") == 0  # idle between requests
    info = value(samples, "shipyard_model_info", name=MODEL, version=VERSION, variant="fp32")
    assert info == 1
    [model_info] = samples["shipyard_model_info"]
    assert model_info.labels["provider"] == "CPUExecutionProvider"


def test_a_refused_request_is_counted_under_its_route_and_status(tabular: Tabular) -> None:
    before = scrape(tabular.server.url)
    rejection(lambda: tabular.client().infer(MODEL, [feature_input(np.zeros((1, 4), np.float32))]))
    after = scrape(tabular.server.url)

    def refused(samples: dict[str, list[Any]]) -> float:
        try:
            return value(samples, "shipyard_requests_total", route=INFER_ROUTE, status="400")
        except KeyError:
            return 0.0

    assert refused(after) == refused(before) + 1


# ---- the API key and the bind address


TEXT_JSON_INPUTS = [
    {"name": name, "shape": [1, 2], "datatype": "INT64", "data": data}
    for name, data in (("input_ids", [2, 3]), ("attention_mask", [1, 1]))
]
INFERENCE_CALLS = {
    "tabular": [
        ("/predict", {"records": RECORDS[:2]}),
        (f"/v1/models/{MODEL}/predict", {"records": RECORDS[:2]}),
        (
            f"/v2/models/{MODEL}/infer",
            {"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 1.0]}]},
        ),
    ],
    "text": [
        ("/predict", {"texts": ["the cat"]}),
        (f"/v1/models/{TEXT_MODEL}/predict", {"texts": ["the cat", "a dog"]}),
        (f"/v2/models/{TEXT_MODEL}/infer", {"inputs": TEXT_JSON_INPUTS}),
    ],
}
ROUTE_IDS = ["predict", "v1", "v2"]
OPEN_ROUTES = [
    "/health",
    "/metrics",
    "/openapi.json",
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
    f"/v2/models/{TEXT_MODEL}",
    f"/v2/models/{TEXT_MODEL}/ready",
    f"/v2/models/{TEXT_MODEL}/config",
]


@pytest.mark.parametrize(("route", "body"), INFERENCE_CALLS["text"], ids=ROUTE_IDS)
def test_inference_routes_need_the_api_key(text: Text, route: str, body: dict[str, Any]) -> None:
    url = f"{text.server.url}{route}"
    for headers in ({}, {"Authorization": "Bearer guess-9d2c"}, {"Authorization": f"Basic {KEY}"}):
        response = httpx.post(url, json=body, headers=headers, timeout=10)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert KEY not in response.text and "guess-9d2c" not in response.text  # tokens are never echoed
    granted = httpx.post(url, json=body, headers=auth(), timeout=10)
    assert granted.status_code == 200, granted.text


def test_health_metadata_and_metrics_stay_open_with_an_api_key(text: Text) -> None:
    for route in OPEN_ROUTES:
        assert httpx.get(f"{text.server.url}{route}", timeout=10).status_code == 200, route


def test_tritonclient_without_the_api_key_is_401(text: Text) -> None:
    client = text.client()
    error = rejection(lambda: client.infer(TEXT_MODEL, text_inputs(text.tokenizer, ["the cat"])[1]))
    assert error.status() == "401", error
    assert client.is_server_ready() and client.is_model_ready(TEXT_MODEL)


@pytest.mark.parametrize(("route", "body"), INFERENCE_CALLS["tabular"], ids=ROUTE_IDS)
def test_without_an_api_key_no_token_is_needed(tabular: Tabular, route: str, body: dict[str, Any]) -> None:
    response = httpx.post(f"{tabular.server.url}{route}", json=body, timeout=10)
    assert response.status_code == 200, response.text


def test_the_server_binds_loopback_by_default(tabular: Tabular) -> None:
    assert ServeParams().host == "127.0.0.1"
    assert f"listening on http://127.0.0.1:{tabular.server.port}" in tabular.server.output()
