"""Sensitive columns: their values never reach Data Docs, results.json, the error line, warnings or the
quarantine file; the counts stay."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from tasks.config import ColumnContract, Contract, parse_params
from tasks.contract import CRITICAL, WARNING, build_suite, suite_to_dict, with_severity
from tasks.errors import ShipyardError
from tasks.masking import MASK, mask_frame, mask_item, mask_result, mask_value, scrub_text
from tasks.paths import INFERRED_SUITE, QUARANTINE_FILE, QUARANTINE_ROWS, VALIDATION_RESULTS, split_path
from tasks.validate import run

TARGET = "label"
SECRET = "SSN-123-45-6789"
SUITE = "contract/suite.json"


def split_frame(rows: int, start: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "size": [1.0 + 0.5 * i for i in range(rows)],
            "ssn": [f"X{start + i:05d}" for i in range(rows)],
            "city": ["Oslo", "Lima", "Lima", "Oslo"] * (rows // 4) + ["Oslo", "Lima"][: rows % 4],
            TARGET: ["no", "yes"] * (rows // 2),
        }
    )


def write(val_cells: dict[tuple[int, str], Any]) -> None:
    frames = {"train": split_frame(20, 0), "val": split_frame(10, 100), "test": split_frame(10, 200)}
    for (row, column), value in val_cells.items():
        frames["val"].loc[row, column] = value
    for name, frame in frames.items():
        split_path(name).parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(split_path(name))


def write_suite(ssn_severity: str = CRITICAL, meta: dict[str, Any] | None = None) -> None:
    """Types and labels, plus a format rule on the ssn column and a city set (a warning)."""
    import great_expectations as gx

    E = gx.expectations
    kinds = {"size": "numeric", "ssn": "categorical", "city": "categorical", TARGET: "categorical"}
    contract = Contract(columns={c: ColumnContract(type=k) for c, k in kinds.items()}, labels=["no", "yes"])
    inferred = build_suite(contract, TARGET)
    ssn = E.ExpectColumnValuesToMatchRegex(column="ssn", regex=r"^X\d{5}$")
    city = E.ExpectColumnValuesToBeInSet(column="city", value_set=["Oslo", "Lima"])
    extra = [with_severity(ssn, ssn_severity), with_severity(city, WARNING)]
    suite = gx.ExpectationSuite(name="shipyard", expectations=[*inferred.expectations, *extra])
    data = {**suite_to_dict(suite), "meta": meta or {}}
    Path(SUITE).parent.mkdir(parents=True, exist_ok=True)
    Path(SUITE).write_text(json.dumps(data), encoding="utf-8")


def params(**validate: Any):
    return parse_params({"ingest": {"target": TARGET}, "validate": {"suite": SUITE, **validate}})


def everything_written() -> dict[str, bytes]:
    files = [p for root in ("reports", "data") for p in Path(root).rglob("*") if p.is_file()]
    return {str(p): p.read_bytes() for p in files if p.suffix != ".parquet"}


def leaks(secret: str) -> list[str]:
    return [name for name, data in everything_written().items() if secret.encode() in data]


def error_of(params_: Any) -> str:
    with pytest.raises(ShipyardError) as err:
        run(params_)
    return str(err.value)


def test_sensitive_values_are_masked_in_docs_results_and_the_error(project: Path) -> None:
    write({(3, "ssn"): SECRET, (5, "city"): "Bergen", (6, "ssn"): "nope"})
    write_suite()

    # without marking it, the value shows (this is what the masking must prevent)
    message = error_of(params())
    assert SECRET in message and any("docs" in name for name in leaks(SECRET))

    message = error_of(params(sensitive_columns=["ssn"]))
    assert SECRET not in message and "nope" not in message
    assert "split 'val', column 'ssn', expect_column_values_to_match_regex" in message
    assert "2 unexpected values, e.g. ['***', '***']" in message  # the count stays
    assert leaks(SECRET) == [] and leaks("nope") == []
    results = json.loads(VALIDATION_RESULTS.read_text(encoding="utf-8"))
    assert any("'Bergen'" in line for line in results["warnings"])  # other columns keep their values
    failed = [e for e in results["splits"]["val"]["expectations"] if not e["success"]]
    (ssn,) = [e for e in failed if e["column"] == "ssn"]
    assert ssn["unexpected_count"] == 2 and ssn["unexpected_values"] == [MASK, MASK]


def test_the_suite_meta_marks_columns_sensitive_and_warnings_are_masked(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write({(5, "city"): SECRET})
    write_suite(meta={"shipyard": {"target": TARGET, "sensitive_columns": ["city"]}})
    with caplog.at_level(logging.WARNING, logger="shipyard.validate"):
        report = run(params())

    (line,) = report["warnings"]
    assert "column 'city', expect_column_values_to_be_in_set" in line and "e.g. ['***']" in line
    assert SECRET not in caplog.text and "'***'" in caplog.text
    assert leaks(SECRET) == []


def test_the_quarantine_file_masks_sensitive_values(project: Path) -> None:
    write({(3, "ssn"): SECRET})
    write_suite()
    report = run(params(sensitive_columns=["ssn"], on_bad_rows="quarantine", max_bad_row_fraction=0.2))

    assert report["quarantine"]["rows"]["val"] == 1
    assert json.loads(QUARANTINE_FILE.read_text())["val"] == [3]
    text = QUARANTINE_ROWS.read_text(encoding="utf-8")
    assert "column 'ssn': expect_column_values_to_match_regex" in text and ",***," in text
    assert leaks(SECRET) == []
    # the suite as used (what export publishes for serving) names the params' sensitive column too
    used = json.loads(INFERRED_SUITE.read_text(encoding="utf-8"))
    assert used["meta"]["shipyard"]["sensitive_columns"] == ["ssn"]
    assert used["meta"]["shipyard"]["target"] == TARGET


def test_masking_keeps_counts_and_positions_only() -> None:
    result = {
        "element_count": 10,
        "unexpected_count": 2,
        "unexpected_percent": 20.0,
        "partial_unexpected_list": [SECRET, None],
        "partial_unexpected_counts": [{"value": SECRET, "count": 2}],
        "partial_unexpected_index_list": [3, 6],
        "observed_value": 42.5,
    }
    assert mask_value(result) == {
        "element_count": 10,
        "unexpected_count": 2,
        "unexpected_percent": 20.0,
        "partial_unexpected_list": [MASK, None],
        "partial_unexpected_counts": [{"value": MASK, "count": 2}],
        "partial_unexpected_index_list": [3, 6],
        "observed_value": MASK,
    }
    assert scrub_text(f"could not convert '{SECRET}' in column 'ssn'", keep={"ssn"}) == (
        "could not convert '***' in column 'ssn'"
    )
    item = {"column": "who", "unexpected_values": ["Ann"], "message": "class 'Ann' holds 99.0% of the rows"}
    assert mask_item(item, {"who"})["message"] == "class '***' holds 99.0% of the rows"
    assert mask_item(item, {"other"}) is item
    frame = mask_frame(pd.DataFrame({"who": ["Ann", None], "n": [1, 2]}), {"who"})
    assert (
        frame["who"].tolist()[0] == MASK
        and pd.isna(frame["who"].tolist()[1])
        and frame["n"].tolist() == [1, 2]
    )


def test_a_result_on_a_sensitive_column_keeps_counts_but_not_values() -> None:
    def result(kind: str, observed: Any, column: str = "ssn") -> SimpleNamespace:
        config = SimpleNamespace(type=kind, kwargs={"column": column})
        info = {"raised_exception": True, "exception_message": f"bad value '{SECRET}' in 'ssn'"}
        return SimpleNamespace(
            expectation_config=config, result={"observed_value": observed}, exception_info=info
        )

    unique = result("expect_column_unique_value_count_to_be_between", 17)
    mask_result(unique, {"ssn"})
    assert unique.result == {"observed_value": 17}
    assert unique.exception_info["exception_message"] == "bad value '***' in 'ssn'"
    largest = result("expect_column_max_to_be_between", 9.5)
    mask_result(largest, {"ssn"})
    assert largest.result == {"observed_value": MASK}
    other = result("expect_column_max_to_be_between", 9.5, column="size")
    mask_result(other, {"ssn"})
    assert other.result == {"observed_value": 9.5} and SECRET in other.exception_info["exception_message"]
