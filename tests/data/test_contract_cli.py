"""`shipyard contract infer/check` on a CSV never seen before, bad copies of it, chunks, Parquet, privacy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.contract_cli import contract_app
from tasks.contract import load_suite
from tasks.contract_check import check_file, iter_chunks
from tasks.errors import ShipyardError

SECRET = "SSN-"  # every value of the sensitive column starts with it


def reference(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """Odd column names, a string label, a categorical, missing values, a sensitive column."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "Weight (kg)": rng.normal(70, 8, n).round(1),
            "visits/yr": rng.integers(0, 12, n),
            "région": rng.choice(["nord", "sud", "est"], n),
            "patient ssn": [f"{SECRET}{i:06d}" for i in range(n)],
            "Outcome?": rng.choice(["recovered", "readmitted"], n),
        }
    )
    frame.loc[rng.random(n) < 0.05, "Weight (kg)"] = np.nan
    return frame


def run(*args: str):
    return CliRunner().invoke(contract_app, list(args))


@pytest.fixture
def contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder (the cwd) with ref.csv and contract/suite.json inferred from it."""
    monkeypatch.chdir(tmp_path)
    reference().to_csv("ref.csv", index=False)
    result = run("infer", "--data", "ref.csv", "--target", "Outcome?", "--sensitive", "patient ssn")
    assert result.exit_code == 0, result.output
    assert "contract/suite.json" in result.output and "validate.suite" in result.output
    return tmp_path


def check(path: str, *extra: str):
    return run("check", "--data", path, "--suite", "contract/suite.json", *extra)


def test_infer_then_check_the_same_data_passes(contract: Path) -> None:
    suite = json.loads(Path("contract/suite.json").read_text())
    assert suite["meta"]["shipyard"]["target"] == "Outcome?"
    assert {"Weight (kg)", "région", "Outcome?"} <= {e["kwargs"].get("column") for e in suite["expectations"]}
    result = check("ref.csv")
    assert result.exit_code == 0, result.output
    assert "passed" in result.output
    report = json.loads(Path("reports/contract/results.json").read_text())
    assert report["success"] and report["rows"] == 240 and report["failures"] == []


def test_infer_refuses_to_overwrite_an_edited_suite(contract: Path) -> None:
    suite = Path("contract/suite.json")
    suite.write_text(suite.read_text().replace('"warning"', '"critical"'))
    result = run("infer", "--data", "ref.csv", "--target", "Outcome?", "--sensitive", "patient ssn")
    assert result.exit_code == 1 and "--force" in result.output
    assert '"warning"' not in suite.read_text()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda f: f.rename(columns={"région": "region"}), ["missing columns ['région']", "'region'"]),
        (lambda f: f.drop(columns=["visits/yr"]), ["missing columns ['visits/yr']"]),
        (lambda f: f.assign(extra=1), ["unexpected columns ['extra']"]),
    ],
    ids=["renamed", "missing", "extra"],
)
def test_check_names_column_layout_changes(contract: Path, change, words) -> None:
    change(reference()).to_csv("bad.csv", index=False)
    result = check("bad.csv")
    assert result.exit_code == 1, result.output
    report = json.loads(Path("reports/contract/results.json").read_text())
    line = " ".join(report["failures"])
    assert "expect_table_columns_to_match_set" in line
    for word in words:
        assert word in line


def test_check_names_column_and_rule_of_each_bad_value(contract: Path) -> None:
    bad = reference().astype({"Weight (kg)": object, "visits/yr": float})
    bad.loc[3, "Weight (kg)"] = "heavy"  # wrong type
    bad.loc[4, "visits/yr"] = np.inf  # ±Inf
    bad.loc[5, "visits/yr"] = -np.inf
    bad.loc[6, "Outcome?"] = "deceased"  # label outside the set
    bad["région"] = "nord"  # constant column
    bad.loc[7, "visits/yr"] = 500  # extreme outlier (a range rule: critical in an owned contract)
    bad.to_csv("bad.csv", index=False)
    result = check("bad.csv")
    assert result.exit_code == 1, result.output
    for words in (
        ("Weight (kg)", "finite numbers", "'heavy'"),
        ("visits/yr", "finite numbers", "'inf'", "'-inf'"),
        ("Outcome?", "in_set", "'deceased'"),
        ("région", "not constant", "observed 1"),
        ("visits/yr", "between", "500.0"),
    ):
        assert any(all(w in line for w in words) for line in result.output.splitlines()), (
            words,
            result.output,
        )
    report = json.loads(Path("reports/contract/results.json").read_text())
    failures = " ".join(report["failures"])
    assert "column 'Outcome?', expect_column_values_to_be_in_set" in failures
    assert "column 'région', expect_column_unique_value_count_to_be_between" in failures


def test_chunked_result_equals_the_whole_file_result(tmp_path: Path) -> None:
    from tasks.config import Params
    from tasks.contract_check import infer_file

    clean = reference(n=60)
    clean.to_csv(tmp_path / "ref.csv", index=False)
    suite = infer_file(tmp_path / "ref.csv", Params(), target="Outcome?").suite
    frame = pd.concat([clean, clean.iloc[[0, 1]]], ignore_index=True)  # duplicates across chunk borders
    frame.loc[10, "Outcome?"] = "unknown"
    frame.loc[30:33, "Weight (kg)"] = np.nan
    frame.loc[40, "visits/yr"] = 99
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    whole = check_file(path, suite, chunk_rows=10_000)
    chunked = check_file(path, suite, chunk_rows=9)
    assert (whole["chunks"], chunked["chunks"]) == (1, 7)

    def outcome(report):
        keys = ("type", "column", "success", "element_count", "missing_count", "unexpected_count")
        return [{k: e.get(k) for k in keys} for e in report["splits"]["data.csv"]["expectations"]]

    assert outcome(chunked) == outcome(whole)
    assert chunked["failures"] == whole["failures"] and chunked["success"] == whole["success"]
    assert any("'unknown'" in line for line in whole["failures"])
    unique = next(e for e in outcome(whole) if e["type"] == "expect_compound_columns_to_be_unique")
    assert unique["unexpected_count"] == 4  # rows 0, 1 and their copies at the end


def test_a_parquet_dataset_directory_is_one_dataset(tmp_path: Path) -> None:
    frame = reference(n=90)
    folder = tmp_path / "dataset"
    folder.mkdir()
    for index in range(3):
        frame.iloc[index * 30 : (index + 1) * 30].to_parquet(folder / f"part-{index}.parquet", index=False)
    frame.iloc[[0]].to_parquet(folder / "part-3.parquet", index=False)  # a row of part 0 again
    chunks = list(iter_chunks(folder, chunk_rows=1_000))
    assert len(chunks) == 1 and len(chunks[0]) == 91
    from tasks.config import Params
    from tasks.contract_check import infer_file

    suite = infer_file(folder, Params(), target="Outcome?").suite
    report = check_file(folder, suite, chunk_rows=40)
    assert report["rows"] == 91 and report["chunks"] == 3 and report["format"] == "parquet"
    unique = next(e for e in report["splits"]["dataset"]["expectations"] if "columns" in e)
    assert unique["unexpected_count"] == 2 and unique["success"]  # 2 of 91 rows: within the 5% allowed


def test_sensitive_values_never_appear(contract: Path) -> None:
    bad = reference()
    bad.loc[2, "patient ssn"] = f"{SECRET}LEAKED"
    bad["patient ssn"] = bad["patient ssn"].where(bad.index != 3, None)
    bad.loc[5, "Outcome?"] = "deceased"
    bad = pd.concat([bad, bad.iloc[[2]]], ignore_index=True)
    bad.to_csv("bad.csv", index=False)
    result = check("bad.csv")
    assert result.exit_code == 1
    shown = result.output + Path("reports/contract/results.json").read_text()
    shown += Path("contract/suite.json").read_text()
    assert SECRET not in shown
    assert "'deceased'" in result.output  # other columns' values are still shown


def test_read_errors_are_one_line_naming_the_file(tmp_path: Path) -> None:
    latin = tmp_path / "latin.csv"
    latin.write_bytes("a,b\n1,é\n".encode("latin-1"))
    with pytest.raises(ShipyardError, match=r"latin.csv: not UTF-8 text"):
        list(iter_chunks(latin, 1000))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ShipyardError, match="empty.csv: the file is empty"):
        list(iter_chunks(empty, 1000))
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(ShipyardError, match="ragged.csv: cannot read as CSV"):
        list(iter_chunks(ragged, 1000))
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeffa;b\n1;2\n".encode())
    assert list(next(iter_chunks(bom, 1000)).columns) == ["a", "b"]


def test_header_only_fails_the_row_count(contract: Path) -> None:
    Path("header.csv").write_text(",".join(reference().columns) + "\n")
    result = check("header.csv")
    assert result.exit_code == 1
    report = json.loads(Path("reports/contract/results.json").read_text())
    assert any("expect_table_row_count_to_be_between" in line for line in report["failures"])


def test_check_errors_go_to_stderr(contract: Path) -> None:
    result = check("nowhere.csv")
    assert result.exit_code == 1 and "error: nowhere.csv: file not found" in result.output
    suite = load_suite("contract/suite.json")
    assert suite.expectations
