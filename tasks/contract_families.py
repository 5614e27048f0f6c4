"""Contracts for the image and text families: GE suites inferred from the training split, plus the checks
Great Expectations cannot express (rows per class, the same item in two splits), computed here.

An image split holds metadata only (path, label, width, height, mode, sha256); a text split holds the text
column and the label. Their suites are plain GE 1.x JSON like the tabular one, so a user owns them the same
way. The shipyard checks return items in the report's expectation format, so that they land in results.json
and in the one-line failure message like GE's. Great Expectations is imported inside the functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from tasks.contract import (
    CRITICAL,
    SUITE_NAME,
    SUITE_NOTES,
    WARNING,
    mostly_for,
    widened_range,
    with_severity,
)
from tasks.errors import ShipyardError
from tasks.features import label_values

if TYPE_CHECKING:
    import great_expectations as gx

FAMILIES = ("tabular", "image", "text")
IMAGE_COLUMNS = ("path", "width", "height", "mode", "sha256")
NON_BLANK_REGEX = r"\S"
MAX_CLASS_SHARE = 0.99  # above it, one class is nearly all the rows: a warning
EXAMPLES_KEPT = 5

MIN_CLASS_ROWS = "shipyard_min_rows_per_class"
MAX_CLASS_SHARE_CHECK = "shipyard_max_class_share"
UNIQUE_ACROSS_SPLITS = "shipyard_unique_across_splits"


@dataclass(frozen=True)
class Task:
    """What ingest produced: the family, and for text the column holding the text."""

    family: str = "tabular"
    text_column: str | None = None

    @property
    def item_column(self) -> str | None:
        """The column whose equal values are the same example (None for tabular)."""
        return {"image": "sha256", "text": self.text_column}.get(self.family)

    @property
    def noun(self) -> str:
        return {"image": "image(s)", "text": "text(s)"}.get(self.family, "row(s)")


def task_from_ingest(info: Any, source: str) -> Task:
    """The Task an ingest report records; a report without `task` is tabular (written before families)."""
    if not isinstance(info, Mapping):
        raise ShipyardError(f"{source}: expected a JSON object; run the ingest stage again")
    family = info.get("task", "tabular")
    if family not in FAMILIES:
        raise ShipyardError(f"{source}: task must be one of {list(FAMILIES)}, got {family!r}")
    if family != "text":
        return Task(family)
    column = info.get("text_column")
    if not isinstance(column, str) or not column:
        raise ShipyardError(f"{source}: task 'text' needs 'text_column' (the column holding the text)")
    return Task(family, column)


def infer_family_suite(train: pd.DataFrame, target: str, task: Task, params: Any) -> gx.ExpectationSuite:
    """The inferred suite for an image or text task (the tabular one is `contract.infer_contract`)."""
    import great_expectations as gx

    if task.family == "image":
        expectations = image_expectations(train, target, params)
    elif task.family == "text" and task.text_column is not None:
        expectations = text_expectations(train, target, task.text_column, params)
    else:
        raise ValueError(f"no family suite for task {task.family!r}")
    return gx.ExpectationSuite(name=SUITE_NAME, expectations=expectations, notes=SUITE_NOTES)


def image_expectations(train: pd.DataFrame, target: str, params: Any) -> list[Any]:
    """Image metadata: known labels, present and unique hashes, the observed modes and (widened) sizes."""
    import great_expectations as gx

    E = gx.expectations
    _require_columns(train, [*IMAGE_COLUMNS, target], "image metadata")
    out = _table_expectations(E, train)
    out += [with_severity(E.ExpectColumnValuesToNotBeNull(column=c), CRITICAL) for c in ("path", "sha256")]
    out.append(with_severity(E.ExpectColumnValuesToBeUnique(column="sha256"), CRITICAL))
    modes = label_values(train["mode"])
    out.append(with_severity(E.ExpectColumnValuesToBeInSet(column="mode", value_set=modes), WARNING))
    out += [e for c in ("width", "height") for e in _size_range(E, train[c], c, params.range_margin)]
    return out + _label_expectations(E, train, target)


def text_expectations(train: pd.DataFrame, target: str, column: str, params: Any) -> list[Any]:
    """Text: no missing or blank texts (beyond `max_empty_fraction`), plausible lengths, few duplicates."""
    import great_expectations as gx

    E = gx.expectations
    _require_columns(train, [column, target], "text")
    blank = mostly_for(params.max_empty_fraction)
    out = _table_expectations(E, train)
    out.append(with_severity(E.ExpectColumnValuesToNotBeNull(column=column, mostly=blank), CRITICAL))
    out.append(
        with_severity(
            E.ExpectColumnValuesToMatchRegex(column=column, regex=NON_BLANK_REGEX, mostly=blank), CRITICAL
        )
    )
    _, longest = widened_range(train[column].dropna().astype(str).str.len(), params.range_margin)
    out.append(
        with_severity(
            E.ExpectColumnValueLengthsToBeBetween(
                column=column, min_value=1, max_value=max(1, math.ceil(longest or 0))
            ),
            WARNING,
        )
    )
    if params.max_duplicate_fraction < 1:
        unique = E.ExpectColumnValuesToBeUnique(
            column=column, mostly=mostly_for(params.max_duplicate_fraction)
        )
        out.append(with_severity(unique, CRITICAL))
    return out + _label_expectations(E, train, target)


def _require_columns(train: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in train.columns]
    if missing:
        raise ShipyardError(
            f"training split: {what} column(s) {missing} not found; columns: {list(train.columns)}; "
            "run the ingest stage again"
        )


def _table_expectations(E: Any, train: pd.DataFrame) -> list[Any]:
    return [
        with_severity(
            E.ExpectTableColumnsToMatchSet(column_set=list(train.columns), exact_match=True), CRITICAL
        ),
        with_severity(E.ExpectTableRowCountToBeBetween(min_value=1, max_value=None), CRITICAL),
    ]


def _label_expectations(E: Any, train: pd.DataFrame, target: str) -> list[Any]:
    labels = label_values(train[target])
    return [
        with_severity(E.ExpectColumnValuesToNotBeNull(column=target), CRITICAL),
        with_severity(E.ExpectColumnValuesToBeInSet(column=target, value_set=labels), CRITICAL),
    ]


def _size_range(E: Any, series: pd.Series, column: str, margin: float) -> list[Any]:
    low, high = widened_range(series, margin)
    if low is None or high is None:
        return []
    between = E.ExpectColumnValuesToBeBetween(
        column=column, min_value=math.floor(low), max_value=math.ceil(high)
    )
    return [with_severity(between, WARNING)]


def family_checks(
    frames: Mapping[str, pd.DataFrame], target: str, task: Task, params: Any
) -> dict[str, list[dict[str, Any]]]:
    """Per split, what GE cannot check: rows per training class, items shared with an earlier split."""
    checks: dict[str, list[dict[str, Any]]] = {name: [] for name in frames}
    train = frames.get("train")
    if train is not None and target in train.columns:
        min_rows = params.min_class_rows
        checks["train"] += class_count_checks(train[target], target, min_rows)
    names = list(frames)
    for index, name in enumerate(names):
        for earlier in names[:index]:
            item = shared_items_check(frames[name], frames[earlier], earlier, name, task)
            if item is not None:
                checks[name].append(item)
    return checks


def class_count_checks(labels: pd.Series, target: str, min_rows: int) -> list[dict[str, Any]]:
    """Every training class has at least min_rows rows (critical); none holds nearly all rows (warning)."""
    counts = labels.value_counts(dropna=True)
    observed = {str(k): int(v) for k, v in counts.items()}
    few = counts[counts < min_rows]
    enough = _item(MIN_CLASS_ROWS, target, CRITICAL, f"min {min_rows} rows per class", few.empty, observed)
    if not few.empty:
        enough["unexpected_count"] = len(few)
        enough["unexpected_values"] = [_plain(v) for v in few.index[:EXAMPLES_KEPT]]
        enough["message"] = (
            f"{len(few)} class(es) with fewer than {min_rows} training rows "
            f"(validate.min_class_rows; fewest: {int(few.min())})"
        )
    if counts.empty:
        return [enough]
    share = float(counts.iloc[0] / counts.sum())
    top = _item(
        MAX_CLASS_SHARE_CHECK,
        target,
        WARNING,
        f"max class share {MAX_CLASS_SHARE:g}",
        share <= MAX_CLASS_SHARE,
        observed,
    )
    if not top["success"]:
        top["message"] = (
            f"class {_plain(counts.index[0])!r} holds {share:.1%} of the rows (above {MAX_CLASS_SHARE:.0%})"
        )
    return [enough, top]


def shared_items_check(
    frame: pd.DataFrame, earlier: pd.DataFrame, earlier_name: str, name: str, task: Task
) -> dict[str, Any] | None:
    """The same image (sha256) or text in `frame` and an earlier split: leakage. None if it cannot apply."""
    column = task.item_column
    if column is None or column not in frame.columns or column not in earlier.columns:
        return None
    values = frame[column]
    shared = values.notna() & values.isin(set(earlier[column].dropna()))
    count = int(shared.sum())
    item = _item(UNIQUE_ACROSS_SPLITS, column, CRITICAL, f"none in split '{earlier_name}'", count == 0)
    item["other_split"] = earlier_name
    if count:
        shown = "path" if task.family == "image" and "path" in frame.columns else column
        item["unexpected_count"] = count
        item["unexpected_values"] = [_plain(v) for v in frame.loc[shared, shown].head(EXAMPLES_KEPT)]
        item["message"] = (
            f"{count} {task.noun} also in split '{earlier_name}' (duplicates across splits leak {name} data)"
        )
    return item


def _item(
    kind: str, column: str, severity: str, expected: str, success: bool, observed: Any = None
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": kind,
        "column": column,
        "severity": severity,
        "success": bool(success),
        "expected": expected,
        "source": "shipyard",
    }
    if observed is not None:
        item["observed_value"] = observed
    return item


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
