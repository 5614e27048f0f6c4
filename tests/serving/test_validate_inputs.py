"""`serve --validate-inputs`: requests checked against the suite published beside the model, and /metrics.

Registries are built by hand as in test_serving.py (tiny ONNX model + manifest), with a suite.json as
export publishes it. Great Expectations runs only here, to show that the compiled checks agree with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from serving.app import create_app, serve
from serving.contract import (
    BETWEEN,
    COLUMN_SET,
    IN_SET,
    MATCH_REGEX,
    NOT_NULL,
    VALUE_LENGTHS,
    InputContract,
    compile_contract,
    normalise,
)
from serving.lifecycle import ServeSettings
from serving.model import ServingError
from tasks.contract import NUMBER_REGEX
from tests.serving.test_families import make_tokenizer, publish_image, publish_text
from tests.serving.test_serving import publish

TARGET = "target"
FEATURES = ["mean radius", "b", "colour"]
GOOD = {"mean radius": 14.1, "b": -1.0, "colour": "red"}
SECRET = "secret-4711"


def rule(kind: str, severity: str = "critical", **kwargs: Any) -> dict[str, Any]:
    """One expectation as a GE 1.x suite file holds it."""
    return {"type": kind, "kwargs": kwargs, "meta": {"severity": severity}, "severity": severity}


def suite(expectations: list[dict[str, Any]], **settings: Any) -> dict[str, Any]:
    meta = {"target": TARGET, "task": "tabular", "text_column": None, "sensitive_columns": [], "rows": 100}
    return {"name": "shipyard", "expectations": expectations, "meta": {"shipyard": {**meta, **settings}}}


TABULAR_SUITE = suite(
    [
        rule(COLUMN_SET, column_set=[*FEATURES, TARGET], exact_match=True),
        rule("expect_table_row_count_to_be_between", min_value=1),
        rule("expect_compound_columns_to_be_unique", column_list=[*FEATURES, TARGET], mostly=0.95),
        rule(NOT_NULL, column="mean radius"),
        rule(MATCH_REGEX, column="mean radius", regex=NUMBER_REGEX),
        rule(BETWEEN, column="mean radius", min_value=0, max_value=120),
        rule(NOT_NULL, column="b", mostly=0.95),
        rule(MATCH_REGEX, column="b", regex=NUMBER_REGEX),
        rule(BETWEEN, "warning", column="b", min_value=-5, max_value=5),
        rule(IN_SET, "warning", column="colour", value_set=["blue", "red"]),
        rule(NOT_NULL, column=TARGET),
        rule(IN_SET, column=TARGET, value_set=[0, 1, 2]),
    ],
    sensitive_columns=["b"],
)


def add_contract(folder: Path, data: dict[str, Any], name: str = "suite.json") -> None:
    """Write the suite beside the model and name it in the manifest, with its sha256, as export does."""
    (folder / name).write_text(json.dumps(data))
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["contract"] = name
    manifest["files"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    path.write_text(json.dumps(manifest))


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    publish(tmp_path, [0, 1, 2])
    add_contract(tmp_path / "versions" / "v0001", TABULAR_SUITE)
    return tmp_path


@pytest.fixture
def client(registry: Path) -> TestClient:
    return TestClient(create_app(registry, ServeSettings(prefer_gpu=False, validate_inputs=True)))


def post(client: TestClient, *records: dict[str, Any]) -> Any:
    return client.post("/predict", json={"records": list(records)})


def metric_values(client: TestClient, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """{sorted label items: value} of one metric family in the /metrics text."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


# ---- 422 naming row, column and rule


@pytest.mark.parametrize(
    ("record", "column", "kind", "expected"),
    [
        ({**GOOD, "mean radius": 500}, "mean radius", BETWEEN, "min 0, max 120"),
        ({**GOOD, "mean radius": "abc"}, "mean radius", MATCH_REGEX, "a number"),
        ({**GOOD, "mean radius": None}, "mean radius", NOT_NULL, "not null"),
        ({"mean radius": 1.0, "b": 0.0}, "colour", COLUMN_SET, "the column present"),
    ],
    ids=["out-of-range", "wrong-type", "null", "missing-feature"],
)
def test_a_critical_violation_is_422_naming_row_column_and_rule(
    client: TestClient, record: dict[str, Any], column: str, kind: str, expected: str
) -> None:
    response = post(client, GOOD, record)
    assert response.status_code == 422, response.text
    body = response.json()
    item = {"row": 1, "column": column, "rule": kind, "expected": expected, "severity": "critical"}
    assert [{k: v for k, v in d.items() if k != "value"} for d in body["detail"]] == [item]
    assert body["violations"] == 1
    if column in record:
        assert body["detail"][0]["value"] == record[column]  # a column not marked sensitive is echoed


def test_a_sensitive_columns_value_is_never_echoed(client: TestClient) -> None:
    response = post(client, {**GOOD, "b": SECRET})
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"row": 0, "column": "b", "rule": MATCH_REGEX, "expected": "a number", "severity": "critical"}
    ]
    assert SECRET not in response.text
    # a value the contract lets through (b's range is a warning) but the model refuses: masked too
    response = post(client, {**GOOD, "b": 1e39})
    assert response.status_code == 422
    assert "column 'b'" in response.json()["detail"] and "39" not in response.text


def test_warnings_are_counted_but_answered(client: TestClient) -> None:
    response = post(client, {**GOOD, "b": 9, "colour": "green"}, GOOD)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 2
    counts = metric_values(client, "shipyard_input_violations_total")
    assert counts[(("column", "b"), ("rule", BETWEEN), ("severity", "warning"))] == 1
    assert counts[(("column", "colour"), ("rule", IN_SET), ("severity", "warning"))] == 1


def test_metrics_count_violations_and_requests(client: TestClient) -> None:
    for _ in range(2):
        post(client, {**GOOD, "mean radius": -1}, {**GOOD, "mean radius": 121, "colour": "pink"})
    post(client, GOOD)
    client.get("/health")
    client.get("/nowhere")
    violations = metric_values(client, "shipyard_input_violations_total")
    assert violations == {
        (("column", "mean radius"), ("rule", BETWEEN), ("severity", "critical")): 4,
        (("column", "colour"), ("rule", IN_SET), ("severity", "warning")): 2,
    }
    requests = metric_values(client, "shipyard_requests_total")
    assert requests[(("route", "/predict"), ("status", "422"))] == 2
    assert requests[(("route", "/predict"), ("status", "200"))] == 1
    assert requests[(("route", "/health"), ("status", "200"))] == 1
    assert requests[(("route", "other"), ("status", "404"))] == 1


def test_the_422_lists_critical_violations_first_and_counts_all(registry: Path) -> None:
    client = TestClient(create_app(registry, ServeSettings(prefer_gpu=False, validate_inputs=True)))
    records = [{**GOOD, "colour": "pink"}] * 150 + [{**GOOD, "mean radius": -1}]
    body = post(client, *records).json()
    assert body["violations"] == 151 and len(body["detail"]) == 100
    assert body["detail"][0] == {
        "row": 150,
        "column": "mean radius",
        "rule": BETWEEN,
        "expected": "min 0, max 120",
        "severity": "critical",
        "value": -1,
    }


def test_good_records_and_numbers_as_text_pass(client: TestClient) -> None:
    response = post(client, GOOD, {**GOOD, "mean radius": " 0.5 ", "b": "", "extra": "ignored"})
    assert response.status_code == 200, response.text


# ---- off, refused, start-up


def test_without_validation_the_same_requests_get_the_old_answers(registry: Path) -> None:
    client = TestClient(create_app(registry, ServeSettings(prefer_gpu=False)))
    assert post(client, {**GOOD, "mean radius": 500}).status_code == 200
    missing = post(client, {"mean radius": 1.0, "b": 0.0})
    assert missing.status_code == 422 and missing.json()["detail"] == "record 0: missing column 'colour'"
    wrong = post(client, {**GOOD, "mean radius": "abc"})
    assert wrong.json()["detail"] == "record 0: column 'mean radius': expected a number, got 'abc'"
    assert client.get("/health").json()["validate_inputs"] is False
    assert metric_values(client, "shipyard_input_violations_total") == {}


def test_without_validation_no_contract_code_runs(registry: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any) -> Any:
        raise AssertionError("the contract was consulted")

    monkeypatch.setattr(InputContract, "check", boom)
    monkeypatch.setattr("serving.lifecycle.load_input_contract", boom)
    client = TestClient(create_app(registry, ServeSettings(prefer_gpu=False)))
    assert post(client, GOOD).status_code == 200


def test_a_version_without_suite_refuses_to_start(tmp_path: Path) -> None:
    publish(tmp_path, [0, 1, 2])
    with pytest.raises(ServingError, match="has no data contract .*--validate-inputs"):
        create_app(tmp_path, ServeSettings(validate_inputs=True))
    with pytest.raises(ServingError, match="has no data contract"):
        serve(tmp_path, ServeSettings(validate_inputs=True), port=0)
    create_app(tmp_path)  # and without validation it serves as before


def test_the_cli_refuses_to_start_without_suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.cli import app

    publish(tmp_path / "registry", [0, 1, 2])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(f"promote:\n  registry: {tmp_path / 'registry'}\n")
    result = CliRunner().invoke(app, ["serve", "--port", "1", "--validate-inputs"])
    assert result.exit_code == 1
    assert "error: shipyard-model v0001 has no data contract" in result.output
    (tmp_path / "params.yaml").write_text(
        f"promote:\n  registry: {tmp_path / 'registry'}\nserve:\n  validate_inputs: true\n"
    )
    result = CliRunner().invoke(app, ["serve", "--port", "1"])
    assert result.exit_code == 1 and "has no data contract" in result.output


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda m, f: m["files"].pop("suite.json"), "not listed in the manifest's 'files'"),
        (lambda m, f: (f / "suite.json").write_text("{}"), r"sha256 .*suite.json|suite.json: sha256"),
        (lambda m, f: m.update(contract="../suite.json"), "points outside|not listed"),
    ],
    ids=["unlisted", "changed", "outside"],
)
def test_an_unverified_contract_is_refused(registry: Path, change: Any, words: str) -> None:
    folder = registry / "versions" / "v0001"
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest, folder)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ServingError, match=words):
        create_app(registry, ServeSettings(prefer_gpu=False, validate_inputs=True))


def test_startup_log_lists_what_is_checked_and_skipped(
    registry: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="shipyard.serving"):
        create_app(registry, ServeSettings(prefer_gpu=False, validate_inputs=True))
    (line,) = [r.getMessage() for r in caplog.records if "validating inputs" in r.getMessage()]
    assert "9 check(s), 7 critical" in line and "sensitive (values masked): ['b']" in line
    assert "table-level (expect_table_row_count_to_be_between, expect_compound_columns_to_be_unique)" in line
    assert f"mostly < 1 ({NOT_NULL})" in line
    assert f"on the label '{TARGET}' ({NOT_NULL}, {IN_SET})" in line


def test_a_suite_for_another_family_or_a_broken_rule_is_refused() -> None:
    with pytest.raises(ServingError, match="a contract for a text model, this model is tabular"):
        compile_contract(suite([], task="text", text_column="t"), "tabular")
    broken = suite([rule(MATCH_REGEX, column="x", regex="(")])
    with pytest.raises(ServingError, match=r"expectation 1 \(expect_column_values_to_match_regex\)"):
        compile_contract(broken)
    with pytest.raises(ServingError, match="severity must be one of"):
        compile_contract(suite([rule(NOT_NULL, "fatal", column="x")]))


def test_unknown_and_conditional_rules_are_skipped_not_refused() -> None:
    contract = compile_contract(
        suite(
            [
                rule("expect_column_values_to_be_of_type", column="x", type_="int"),
                rule("expect_column_mean_to_be_between", column="x", min_value=0),
                rule(NOT_NULL, column="x", row_condition='y == "a"', condition_parser="pandas"),
                rule(BETWEEN, column="x", min_value="2020-01-01"),
            ]
        )
    )
    assert contract.rules == () and contract.required == ()
    assert contract.skipped == {
        "not supported per request": ["expect_column_values_to_be_of_type"],
        "table-level": ["expect_column_mean_to_be_between"],
        "row_condition": [NOT_NULL],
        "non-numeric range": [BETWEEN],
    }


# ---- text and image models


def test_text_requests_are_checked_against_the_text_column(tmp_path: Path) -> None:
    publish_text(tmp_path, make_tokenizer())
    text_suite = suite(
        [
            rule(COLUMN_SET, column_set=["review", TARGET]),
            rule(NOT_NULL, column="review"),
            rule(MATCH_REGEX, column="review", regex=r"\S"),
            rule(VALUE_LENGTHS, "warning", column="review", min_value=1, max_value=30),
            rule("expect_column_values_to_be_unique", column="review", mostly=0.95),
        ],
        task="text",
        text_column="review",
        sensitive_columns=["review"],
    )
    add_contract(tmp_path / "versions" / "v0001", text_suite)
    client = TestClient(create_app(tmp_path, ServeSettings(prefer_gpu=False, validate_inputs=True)))
    long_text = "the cat sat on the mat " * 5
    padded = "the cat" + " " * 40  # ingest strips texts: 7 characters, as in training
    assert client.post("/predict", json={"texts": ["the cat", long_text, padded]}).status_code == 200
    response = client.post("/predict", json={"texts": ["the dog", "   "]})
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {
            "row": 1,
            "column": "review",
            "rule": MATCH_REGEX,
            "expected": "non-blank text",
            "severity": "critical",
        },
        {  # blank is empty once stripped, as ingest strips: too short too (a warning, listed after)
            "row": 1,
            "column": "review",
            "rule": VALUE_LENGTHS,
            "expected": "length min 1, max 30",
            "severity": "warning",
        },
    ]
    counts = metric_values(client, "shipyard_input_violations_total")
    assert counts[(("column", "review"), ("rule", VALUE_LENGTHS), ("severity", "warning"))] == 2


def test_image_requests_are_checked_by_their_header(tmp_path: Path) -> None:
    from PIL import Image

    from tests.serving.test_families import HEIGHT, WIDTH, b64, encode

    publish_image(tmp_path, channels=1)
    image_suite = suite(
        [
            rule(NOT_NULL, column="path"),
            rule(IN_SET, "warning", column="mode", value_set=["L"]),
            rule(BETWEEN, column="width", min_value=WIDTH - 1, max_value=WIDTH + 1),
            rule(BETWEEN, "warning", column="height", min_value=HEIGHT, max_value=HEIGHT),
        ],
        task="image",
    )
    add_contract(tmp_path / "versions" / "v0001", image_suite)
    client = TestClient(create_app(tmp_path, ServeSettings(prefer_gpu=False, validate_inputs=True)))
    gray = b64(encode(Image.new("L", (WIDTH, HEIGHT))))
    rgb_list = np.zeros((HEIGHT + 2, WIDTH, 3), np.uint8).tolist()
    assert client.post("/predict", json={"images": [gray, rgb_list]}).status_code == 200
    wide = b64(encode(Image.new("L", (WIDTH + 5, HEIGHT))))
    response = client.post("/predict", json={"images": [gray, wide]})
    assert response.status_code == 422
    assert response.json()["detail"][0] == {
        "row": 1,
        "column": "width",
        "rule": BETWEEN,
        "expected": f"min {WIDTH - 1}, max {WIDTH + 1}",
        "severity": "critical",
        "value": WIDTH + 5,
    }
    counts = metric_values(client, "shipyard_input_violations_total")
    assert counts[(("column", "mode"), ("rule", IN_SET), ("severity", "warning"))] == 1
    assert counts[(("column", "height"), ("rule", BETWEEN), ("severity", "warning"))] == 1
    bad = client.post("/predict", json={"images": ["not base64!"]})
    assert bad.status_code == 422 and "not valid base64" in bad.json()["detail"]  # left to the decoder


# ---- the compiled checks agree with Great Expectations


AGREEMENT = [
    (
        "numbers",  # plain numbers only: judged as one array from VECTOR_MIN rows
        [
            rule(NOT_NULL, column="x"),
            rule(MATCH_REGEX, column="x", regex=NUMBER_REGEX),
            rule(BETWEEN, column="x", min_value=0, max_value=10),
            rule(IN_SET, column="x", value_set=[1, 2, 3, 5.5, 10]),
        ],
        [1, 2.0, 5.5, -1, 11, None, float("nan"), float("inf"), 3, 0, 10, 1e-7, 10**20],
    ),
    (
        "not-null",
        [rule(NOT_NULL, column="x")],
        [1.0, None, "a", float("nan"), "", 0],
    ),
    (
        "not-null-numeric",  # blank text in a number column is missing, as the validate stage reads it
        [rule(NOT_NULL, column="x"), rule(MATCH_REGEX, column="x", regex=NUMBER_REGEX)],
        [1.0, None, " ", "", "3", "abc"],
    ),
    (
        "number-type",
        [rule(MATCH_REGEX, column="x", regex=NUMBER_REGEX)],
        [1, 2.5, "3", " 4e2 ", "-.5", "abc", "1,5", "inf", "-Infinity", None, "", "nan", "1_000", "0x10"],
    ),
    (
        "between",
        [rule(BETWEEN, column="x", min_value=0, max_value=10)],
        [0, 5, -1, "7", " 3.5 ", 10, 10.01, None, float("inf"), "-inf", "", 11],
    ),
    (
        "between-strict-one-sided",
        [rule(BETWEEN, column="x", min_value=0, strict_min=True)],
        [0, 0.001, -3, "0", "5", None],
    ),
    (
        "in-set",
        [rule(IN_SET, column="x", value_set=["red", "blue", 3])],
        ["red", "Red", "blue ", "green", 3, 3.0, "3", None, ""],
    ),
    (
        "in-set-numeric",
        [rule(MATCH_REGEX, column="x", regex=NUMBER_REGEX), rule(IN_SET, column="x", value_set=[1, 2])],
        [1, 2.0, "2", " 1 ", 3, "3", None],
    ),
    (
        "value-lengths",
        [rule(VALUE_LENGTHS, column="x", min_value=1, max_value=5)],
        ["a", "abcde", "", "abcdefghijk", 12345, 123456, None, "  "],
    ),
    (
        "value-lengths-strict",
        [rule(VALUE_LENGTHS, column="x", min_value=1, max_value=5, strict_min=True, strict_max=True)],
        ["a", "ab", "abcd", "abcde", None],
    ),
    (
        "non-blank",
        [rule(MATCH_REGEX, column="x", regex=r"\S")],
        ["x", "  ", "", " a ", "\t\n", None],
    ),
    (
        "other-regex",
        [rule(MATCH_REGEX, column="x", regex=r"^[A-Z]{2}\d+$")],
        ["AB12", "ab12", "AB", 12, None, "XY9 "],
    ),
]


@pytest.fixture(scope="module")
def ge_context() -> Any:
    gx = pytest.importorskip("great_expectations")
    return gx.get_context(mode="ephemeral")


def ge_results(context: Any, name: str, frame: pd.DataFrame, items: list[dict[str, Any]]) -> list[Any]:
    """GE's result per expectation on this frame (result_format COMPLETE: the unexpected rows' index)."""
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    configs = [ExpectationConfiguration(type=i["type"], kwargs=i["kwargs"]) for i in items]
    ge_suite = context.suites.add(
        gx.ExpectationSuite(name=name, expectations=[c.to_domain_obj() for c in configs])
    )
    batch = (
        context.data_sources.add_pandas(name)
        .add_dataframe_asset(name)
        .add_batch_definition_whole_dataframe(name)
        .get_batch(batch_parameters={"dataframe": frame})
    )
    results = batch.validate(ge_suite, result_format={"result_format": "COMPLETE"}).results
    for result in results:
        assert not result.exception_info.get("raised_exception"), result.exception_info
    return results


@pytest.mark.parametrize("path", ["by-value", "as-array"])
@pytest.mark.parametrize(("name", "items", "values"), AGREEMENT, ids=[case[0] for case in AGREEMENT])
def test_compiled_checks_agree_with_great_expectations(
    ge_context: Any,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    items: list[dict[str, Any]],
    values: list[Any],
    path: str,
) -> None:
    from tasks.validate import prepare_frame

    monkeypatch.setattr("serving.contract.VECTOR_MIN", 1 if path == "as-array" else 10**9)
    contract = compile_contract(suite(items))
    violations = contract.check([{"x": value} for value in values])
    ours = [{v.row for v in violations if v.rule == item["type"]} for item in items]
    frame = prepare_frame(pd.DataFrame({"x": pd.Series(values, dtype=object)}), set(contract.numeric))
    results = ge_results(ge_context, f"{name}-{path}", frame, items)
    assert ours == [set(result.result.get("unexpected_index_list") or []) for result in results]
    assert any(ours), "each case has a failing row"


def test_a_missing_column_agrees_with_great_expectations(ge_context: Any) -> None:
    """A table rule: GE fails the table naming the column, serving names it in every record."""
    items = [rule(COLUMN_SET, column_set=["x", "y", TARGET], exact_match=True)]
    frame = pd.DataFrame({"x": [1, 2], TARGET: [0, 1]})
    [result] = ge_results(ge_context, "columns", frame, items)
    assert not result.success and result.result["details"]["mismatched"]["missing"] == ["y"]
    violations = compile_contract(suite(items)).check(frame.drop(columns=TARGET).to_dict("records"))
    assert [(v.row, v.column, v.rule) for v in violations] == [(0, "y", COLUMN_SET), (1, "y", COLUMN_SET)]


def test_numbers_in_text_are_read_as_pandas_reads_them() -> None:
    """As the validate stage prepares numeric columns (pd.to_numeric) before GE sees them."""
    texts = [
        "1",
        " 2.5 ",
        "\t-3e2\n",
        "+.5",
        "1.",
        "inf",
        "-Infinity",
        "+INF",
        " inf",
        "inf ",
        "nan",
        "1_000",
    ]
    texts += ["0x10", "1,5", "1e", ".", "-", "", "abc", "1 000"]
    parsed = pd.to_numeric(pd.Series(texts, dtype=object), errors="coerce")
    ours = [normalise(text, numeric=True) for text in texts]
    for text, mine, theirs in zip(texts, ours, parsed.tolist(), strict=True):
        if not text.strip():
            assert mine is None
        elif np.isnan(theirs):
            assert mine == text, text
        else:
            assert mine == theirs, text


def test_booleans_fail_the_number_check() -> None:
    """Deliberately stricter than GE on a prepared frame (pandas reads True as 1): the model refuses them."""
    contract = compile_contract(suite([rule(MATCH_REGEX, column="x", regex=NUMBER_REGEX)]))
    assert [v.row for v in contract.check([{"x": True}, {"x": 1}, {"x": [1]}])] == [0, 2]


def test_the_suite_validate_infers_passes_its_own_training_rows() -> None:
    """A suite as the pipeline builds it (tasks.contract) compiles, and training rows pass it."""
    from tasks.config import ValidateParams
    from tasks.contract import build_suite, infer_contract, suite_to_dict
    from tests.project import tabular_frame

    train = tabular_frame(rows=60)
    target = train.columns[-1]
    data = suite_to_dict(build_suite(infer_contract(train, target, ValidateParams()), target))
    data["meta"] = {"shipyard": {"target": target, "task": "tabular"}}
    contract = compile_contract(data)
    features = [c for c in train.columns if c != target]
    assert sorted(c for c, *_ in contract.required) == sorted(features)
    assert contract.check(train.drop(columns=target).to_dict("records")) == []
    shifted = {**train.drop(columns=target).iloc[0].to_dict(), features[0]: "many"}
    assert [(v.column, v.rule) for v in contract.check([shifted])] == [(features[0], MATCH_REGEX)]


def test_a_big_request_is_judged_as_a_small_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Column by column (arrays where the values are plain numbers) gives the row-by-row verdicts."""
    contract = compile_contract(TABULAR_SUITE)
    values = [1.0, -1, 200, None, "7", "abc", float("nan"), True, 10**400, ""]
    records = [
        {"mean radius": values[k % len(values)], "b": k - 20, "colour": ["red", "pink", None][k % 3]}
        for k in range(40)
    ]
    records[5].pop("colour")
    records[6].pop("mean radius")
    numbers_only = [{**GOOD, "mean radius": float(k * 5)} for k in range(40)]
    for batch in (records, numbers_only):
        monkeypatch.setattr("serving.contract.VECTOR_MIN", 1)
        by_column = contract.check(batch)
        monkeypatch.setattr("serving.contract.VECTOR_MIN", 10**9)
        assert by_column == contract.check(batch)
        assert by_column
