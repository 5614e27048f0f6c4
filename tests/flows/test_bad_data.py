"""The bad-data matrix: each kind of bad data gets one clear `error:` line, a non-zero exit, no new model,
and the last good artifacts untouched.

The project owns its data contracts, as a team would: `shipyard contract infer` on the good data, committed
and named by `validate.suite`. Cases that need no contract (unreadable files) run the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.project import FAST, image_folder, make_project, shipyard, snapshot, tabular_frame, text_frame

TABLE_SUITE = "contract/suite.json"
TEXT_SUITE = "contract/texts.json"


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_server) -> Path:
    """Trained once on good data under an owned table contract; an owned text contract beside it."""
    root = make_project(tmp_path_factory.mktemp("contracted"))
    tabular_frame().to_csv(root / "good.csv", index=False)
    texts().to_csv(root / "texts.csv", index=False)
    for data, out in (("good.csv", TABLE_SUITE), ("texts.csv", TEXT_SUITE)):
        made = shipyard(root, "contract", "infer", "--data", data, "--target", "label", "--out", out)
        assert made.returncode == 0, made.stdout + made.stderr
    sets = [arg for item in [*FAST, f"validate.suite={TABLE_SUITE}"] for arg in ("--set", item)]
    result = shipyard(
        root, "run", "--data", "good.csv", "--target", "label", *sets, PREFECT_API_URL=prefect_server
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return root


def texts() -> pd.DataFrame:
    return text_frame(rows=60).rename(columns={"kind": "label"})


def table(change: Callable[[pd.DataFrame], pd.DataFrame | None]) -> Callable[[Path], str]:
    """A case: the good table changed by `change` (in place, or returning a new frame), written as CSV."""

    def make(root: Path) -> str:
        frame = tabular_frame()
        changed = change(frame)
        (frame if changed is None else changed).to_csv(root / "bad.csv", index=False)
        return "bad.csv"

    return make


def raw(content: str) -> Callable[[Path], str]:
    def make(root: Path) -> str:
        (root / "bad.csv").write_text(content, encoding="utf-8")
        return "bad.csv"

    return make


def good_csv_lines() -> list[str]:
    return tabular_frame().to_csv(index=False).splitlines()


def binary(root: Path) -> str:
    (root / "bad.csv").write_bytes(b"\xff\xfe\x00\x81" * 64)
    return "bad.csv"


def ragged(root: Path) -> str:
    lines = good_csv_lines()
    lines[5] = lines[5].rsplit(",", 1)[0]  # one field short
    (root / "bad.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return "bad.csv"


def wrong_delimiter(root: Path) -> str:
    tabular_frame().to_csv(root / "bad.csv", index=False, sep=":")
    return "bad.csv"


def every(column: str, value, share: float = 0.4) -> Callable[[pd.DataFrame], None]:
    def change(frame: pd.DataFrame) -> None:
        rows = np.random.default_rng(1).choice(len(frame), int(len(frame) * share), replace=False)
        frame[column] = frame[column].astype(object)
        frame.loc[rows, column] = value

    return change


def zero_byte_image(root: Path) -> str:
    made = image_folder(root / "photos", per_class=4)
    made["left"][2].write_bytes(b"")
    return "photos"


def truncated_png(root: Path) -> str:
    made = image_folder(root / "photos", per_class=4)
    png = next(p for p in made["top"] if p.suffix == ".png")
    png.write_bytes(png.read_bytes()[:40])
    return "photos"


def texts_with(change: Callable[[pd.DataFrame], None]) -> Callable[[Path], str]:
    def make(root: Path) -> str:
        frame = texts()
        change(frame)
        frame.to_csv(root / "bad_texts.csv", index=False)
        return "bad_texts.csv"

    return make


def long_texts(frame: pd.DataFrame) -> None:
    for row in (3, 9):
        frame.loc[row, "message"] = f"offer {row} " * 20_000


def empty_texts(frame: pd.DataFrame) -> None:
    frame.loc[[2, 5, 11], "message"] = ""


CONTRACT = ["--set", f"validate.suite={TABLE_SUITE}"]
TEXT_CONTRACT = ["--set", f"validate.suite={TEXT_SUITE}"]
FAIL_ON_BAD_FILES = ["--set", "ingest.bad_files=fail", "--set", "validate.suite=null"]

# case: (make the data, words the error line must contain, extra arguments)
MATRIX: dict[str, tuple[Callable[[Path], str], list[str], list[str]]] = {
    "empty file": (raw(""), ["bad.csv", "empty"], CONTRACT),
    "header only": (raw("age (years),dose_mg,colour,noise,label\n"), ["bad.csv", "no data rows"], CONTRACT),
    "wrong delimiter": (wrong_delimiter, ["bad.csv", "only one column", "delimiter"], CONTRACT),
    "not UTF-8": (binary, ["bad.csv", "UTF-8"], CONTRACT),
    "ragged rows": (ragged, ["bad.csv", "line 6", "ragged"], CONTRACT),
    "renamed column": (
        table(lambda f: f.rename(columns={"noise": "noize"})),
        ["'noise'", "'noize'"],
        CONTRACT,
    ),
    "extra column": (table(lambda f: f.assign(batch_id=7)), ["unexpected columns", "'batch_id'"], CONTRACT),
    "missing column": (table(lambda f: f.drop(columns=["noise"])), ["missing columns", "'noise'"], CONTRACT),
    "wrong type": (table(every("dose_mg", "twelve", 0.02)), ["'dose_mg'", "twelve"], CONTRACT),
    "NaN beyond tolerance": (table(every("age (years)", np.nan)), ["'age (years)'", "null"], CONTRACT),
    "infinity": (table(every("noise", np.inf, 0.02)), ["'noise'", "inf"], CONTRACT),
    "empty strings": (table(every("colour", "")), ["'colour'", "null"], CONTRACT),
    "label outside the set": (table(every("label", "unknown", 0.05)), ["'label'", "unknown"], CONTRACT),
    "single class": (table(lambda f: f.assign(label="low")), ["1 class"], CONTRACT),
    "all rows duplicated": (table(lambda f: pd.concat([f, f], ignore_index=True)), ["duplicate"], CONTRACT),
    "feature identical to the label": (
        table(lambda f: f.assign(outcome=f["label"].map({"low": 0, "mid": 1}))),
        ["'outcome'", "leakage"],
        CONTRACT,
    ),
    "constant column": (table(lambda f: f.assign(noise=0.5)), ["'noise'"], CONTRACT),
    "extreme outliers": (table(every("age (years)", 4.2e7, 0.02)), ["'age (years)'", "42000000"], CONTRACT),
    "truncated PNG": (truncated_png, ["top/", "corrupt image"], FAIL_ON_BAD_FILES),
    "zero-byte image": (zero_byte_image, ["left/", "empty"], FAIL_ON_BAD_FILES),
    "empty texts": (texts_with(empty_texts), ["'message'", "null"], TEXT_CONTRACT),
    "very long texts": (texts_with(long_texts), ["'message'", "length"], TEXT_CONTRACT),
}


@pytest.mark.parametrize("case", MATRIX, ids=list(MATRIX))
def test_bad_data_is_refused_with_one_clear_line_and_nothing_changes(project, prefect_server, case):
    make_data, words, extra = MATRIX[case]
    before = snapshot(project)
    versions = sorted(p.name for p in (project / "registry/versions").iterdir())
    source = make_data(project)
    result = shipyard(
        project, "run", "--data", source, "--target", "label", *extra, PREFECT_API_URL=prefect_server
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    for word in words:
        assert word in errors[0], errors[0]
    assert snapshot(project) == before
    assert sorted(p.name for p in (project / "registry/versions").iterdir()) == versions


def test_a_byte_order_mark_is_read_as_utf8_and_changes_nothing(project, prefect_server):
    """Excel's "CSV UTF-8" starts with a BOM: the same data with one is the same dataset, not a new column."""
    before = snapshot(project)
    data = (project / "good.csv").read_bytes()
    (project / "bom.csv").write_bytes(b"\xef\xbb\xbf" + data)
    sets = [arg for item in [*FAST, f"validate.suite={TABLE_SUITE}"] for arg in ("--set", item)]
    result = shipyard(
        project, "run", "--data", "bom.csv", "--target", "label", *sets, PREFECT_API_URL=prefect_server
    )
    assert result.returncode == 0, result.stdout + result.stderr
    after = snapshot(project)
    assert (
        after["registry/production.json"] == before["registry/production.json"]
    )  # the same model: not republished
    assert after["export/model.onnx"] == before["export/model.onnx"]
