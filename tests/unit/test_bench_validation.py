"""bench.validation at a tiny size: GE and pandas agree on every expectation, ratios follow from the timings,
the chunked check passes in several chunks and reports its peak RSS."""

import json

import pytest

from bench import validation


@pytest.mark.slow
def test_bench_validation_tiny(tmp_path):
    out = tmp_path / "validation.json"
    args = [
        "--rows",
        "2000",
        "--big-gb",
        "0.0005",
        "--repeats",
        "1",
        "--chunk-rows",
        "1000",
        "--out",
        str(out),
    ]
    assert validation.main(args) == 0
    report = json.loads(out.read_text())

    v = report["validation"]
    assert v["rows"] == 2000 and v["columns"] == 30
    assert v["disagreements"] == [] and v["ge_success"]  # the same rules, the same verdicts and counts
    assert v["ratio"] == pytest.approx(v["ge_s"] / v["pandas_s"])
    assert v["meets_goal"] == (v["ratio"] <= v["goal_ratio"])
    assert {r["type"] for r in v["breakdown"]} >= {
        "expect_column_values_to_match_regex",
        "expect_compound_columns_to_be_unique",
    }
    for side in ("ge", "pandas"):
        assert v["peak_rss"][side]["peak_mib"] > 0 and v["peak_rss"][side]["added_mib"] >= 0

    drift = report["drift"]
    assert "skipped" in drift or drift["caught"]

    chunked = report["chunked"]
    assert chunked["success"], chunked["failures"]
    assert chunked["chunks"] == -(-chunked["rows"] // 1000) >= 2
    assert chunked["peak_rss_bytes"] > 0 and chunked["file_bytes"] >= 0.0005e9
    assert chunked["rows_per_s"] == pytest.approx(chunked["rows"] / chunked["check_s"])


def test_pandas_rules_count_like_ge():
    import math

    import pandas as pd

    frame = pd.DataFrame({"a": [1.0, math.inf, None, 5.0], "b": ["x", "y", "x", "z"]})
    regex = validation.pandas_rule(
        frame, "expect_column_values_to_match_regex", {"column": "a", "regex": "x"}
    )
    assert regex == {"success": False, "unexpected_count": 1}
    between = {"column": "a", "min_value": 0, "max_value": 4}
    assert (
        validation.pandas_rule(frame, "expect_column_values_to_be_between", between)["unexpected_count"] == 2
    )
    in_set = {"column": "b", "value_set": ["x", "y"], "mostly": 0.7}
    assert validation.pandas_rule(frame, "expect_column_values_to_be_in_set", in_set) == {
        "success": True,
        "unexpected_count": 1,
    }
