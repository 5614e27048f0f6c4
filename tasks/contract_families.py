"""Contracts for the image and text families: GE suites inferred from the training split, plus the checks
Great Expectations cannot express, computed here for every family: rows per class (image, text), target
leakage and source duplicates (tabular), the same item or row in two splits.

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

import numpy as np
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
TARGET_LEAKAGE = "shipyard_target_leakage"
SOURCE_DUPLICATES = "shipyard_source_duplicates"
MIN_LEAKAGE_ROWS = 20  # fewer rows than this can map one-to-one onto the labels by chance
LEAKAGE_PEEK_ROWS = 1000


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


def infer_family_suite(
    train: pd.DataFrame, target: str, task: Task, params: Any, range_severity: str = WARNING
) -> gx.ExpectationSuite:
    """The inferred suite for an image or text task (the tabular one is `contract.infer_contract`).

    Size and length ranges are warnings in the pipeline's automatic suite; an owned contract
    (`contract infer`) makes them critical.
    """
    import great_expectations as gx

    if task.family == "image":
        expectations = image_expectations(train, target, params, range_severity)
    elif task.family == "text" and task.text_column is not None:
        expectations = text_expectations(train, target, task.text_column, params, range_severity)
    else:
        raise ValueError(f"no family suite for task {task.family!r}")
    return gx.ExpectationSuite(name=SUITE_NAME, expectations=expectations, notes=SUITE_NOTES)


def image_expectations(
    train: pd.DataFrame, target: str, params: Any, range_severity: str = WARNING
) -> list[Any]:
    """Image metadata: known labels, present and unique hashes, the observed modes and (widened) sizes."""
    import great_expectations as gx

    E = gx.expectations
    _require_columns(train, [*IMAGE_COLUMNS, target], "image metadata")
    out = _table_expectations(E, list(train.columns))
    out += [with_severity(E.ExpectColumnValuesToNotBeNull(column=c), CRITICAL) for c in ("path", "sha256")]
    out.append(with_severity(E.ExpectColumnValuesToBeUnique(column="sha256"), CRITICAL))
    modes = label_values(train["mode"])
    out.append(with_severity(E.ExpectColumnValuesToBeInSet(column="mode", value_set=modes), WARNING))
    out += [
        with_severity(e, range_severity)
        for c in ("width", "height")
        for e in _size_range(E, train[c], c, params.range_margin)
    ]
    return out + _label_expectations(E, train, target)


def text_expectations(
    train: pd.DataFrame, target: str, column: str, params: Any, range_severity: str = WARNING
) -> list[Any]:
    """Text: no missing or blank texts (beyond `max_empty_fraction`), plausible lengths, few duplicates."""
    import great_expectations as gx

    E = gx.expectations
    _require_columns(train, [column, target], "text")
    blank = mostly_for(params.max_empty_fraction)
    out = _table_expectations(E, [column, target], exact=False)  # other columns are not used
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
            range_severity,
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


def _table_expectations(E: Any, columns: list[str], exact: bool = True) -> list[Any]:
    return [
        with_severity(E.ExpectTableColumnsToMatchSet(column_set=columns, exact_match=exact), CRITICAL),
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
    return [between]


def family_checks(
    frames: Mapping[str, pd.DataFrame], target: str, task: Task, params: Any
) -> dict[str, list[dict[str, Any]]]:
    """Per split, what GE cannot check: rows per training class (image, text) or target leakage (tabular),
    and items or rows shared with an earlier split."""
    checks: dict[str, list[dict[str, Any]]] = {name: [] for name in frames}
    train = frames.get("train")
    if train is not None and target in train.columns:
        if task.family == "tabular":
            checks["train"] += leakage_checks(train, target, getattr(params, "target_leakage", CRITICAL))
        else:
            checks["train"] += class_count_checks(train[target], target, params.min_class_rows)
    names = list(frames)
    reference = list(frames[names[0]].columns) if names else []
    keys = {name: item_keys(frame, task, reference) for name, frame in frames.items()}
    for index, name in enumerate(names):
        for earlier in names[:index]:
            item = shared_items_check(frames[name], keys[name], keys[earlier], earlier, name, task)
            if item is not None:
                checks[name].append(item)
    return checks


def leakage_checks(train: pd.DataFrame, target: str, severity: str) -> list[dict[str, Any]]:
    """Features that are the label in disguise: one item per leaked column, or one passing item.

    A feature leaks when its values and the labels map one-to-one (each value one label, each label one
    value) over at least MIN_LEAKAGE_ROWS rows, so that a few rows cannot trigger it by chance.
    `severity` is validate.target_leakage: critical, warning, or off (no check).
    """
    if severity == "off":
        return []
    labels = train[target]
    classes = int(labels.nunique())
    leaked = [c for c in train.columns if c != target and is_one_to_one(train[c], labels, classes)]
    expected = f"no feature one-to-one with the label '{target}'"
    if not leaked:
        return [check_item(TARGET_LEAKAGE, None, severity, expected, True)]
    items = []
    for column in leaked:
        item = check_item(TARGET_LEAKAGE, str(column), severity, expected, False)
        item["message"] = f"column '{column}' maps one-to-one onto the label '{target}': target leakage"
        item["observed_value"] = {"distinct_values": int(train[column].nunique())}
        items.append(item)
    return items


def is_one_to_one(feature: pd.Series, labels: pd.Series, classes: int | None = None) -> bool:
    """Each value one label and each label one value, over enough rows with both (and two labels or more).

    `classes` (the labels' distinct count) bounds the feature's distinct values: a look at the first rows
    rules out most features (any with more distinct values) before the exact count over every row.
    """
    classes = int(labels.nunique()) if classes is None else classes
    try:
        head = feature.iloc[:LEAKAGE_PEEK_ROWS][labels.iloc[:LEAKAGE_PEEK_ROWS].notna()]
        if classes < 2 or head.nunique() > classes:
            return False
        both = (feature.notna() & labels.notna()).to_numpy()
        if both.sum() < MIN_LEAKAGE_ROWS:
            return False
        value_codes, values = pd.factorize(feature[both])
        label_codes, present = pd.factorize(labels[both])
    except TypeError:  # unhashable values (lists, dicts): not a feature to compare
        return False
    if len(values) != len(present) or len(present) < 2:
        return False
    pairs = np.unique(value_codes.astype(np.int64) * len(present) + label_codes)
    return len(pairs) == len(present)


def source_checks(info: Mapping[str, Any] | None, task: Task, params: Any) -> list[dict[str, Any]]:
    """Checks on the source as ingest read it: the share of exact duplicate rows ingest dropped (tabular).

    Ingest drops exact duplicates before splitting, so the splits cannot show them; a source that is mostly
    repeats is still suspect (a join gone wrong, an export run twice). Text and image sources are left out:
    repeated texts and images are common in honest data, and ingest reports them.
    """
    if task.family != "tabular" or not isinstance(info, Mapping):
        return []
    read, dropped = info.get("rows_read"), info.get("duplicates_dropped")
    if not isinstance(read, int) or not isinstance(dropped, int) or read <= 0:
        return []
    cap = params.max_duplicate_fraction
    fraction = dropped / read
    item = check_item(
        SOURCE_DUPLICATES, None, CRITICAL, f"max duplicate fraction {cap:.4g}", fraction <= cap, fraction
    )
    item["unexpected_count"] = dropped
    if fraction > cap:
        item["message"] = (
            f"{dropped} of {read} rows ({fraction:.1%}) in the source are duplicates "
            f"(max {cap * 100:.4g}%, validate.max_duplicate_fraction)"
        )
    return [item]


def class_count_checks(labels: pd.Series, target: str, min_rows: int) -> list[dict[str, Any]]:
    """Every training class has at least min_rows rows (critical); none holds nearly all rows (warning)."""
    counts = labels.value_counts(dropna=True)
    observed = {str(k): int(v) for k, v in counts.items()}
    few = counts[counts < min_rows]
    enough = check_item(
        MIN_CLASS_ROWS, target, CRITICAL, f"min {min_rows} rows per class", few.empty, observed
    )
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
    top = check_item(
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


def item_keys(frame: pd.DataFrame, task: Task, columns: list[Any]) -> pd.Series | None:
    """What makes two examples the same: the image's hash, the text, or (tabular) the hash of the whole
    row over `columns`. None where that cannot be told (the column is missing, the columns differ)."""
    column = task.item_column
    if column is not None:
        return frame[column] if column in frame.columns else None
    if set(frame.columns) != set(columns) or frame.columns.has_duplicates:
        return None
    return row_hashes(frame[columns])


def shared_items_check(
    frame: pd.DataFrame,
    keys: pd.Series | None,
    earlier_keys: pd.Series | None,
    earlier_name: str,
    name: str,
    task: Task,
) -> dict[str, Any] | None:
    """The same image, text or row (see item_keys) in `frame` and an earlier split: leakage.

    Ingest drops duplicates before splitting, so a shared item means the splits were not made from one
    de-duplicated table. Rows are reported by position, not by value (a row may hold sensitive values).
    None if the check cannot apply.
    """
    if keys is None or earlier_keys is None:
        return None
    shared = (keys.notna() & keys.isin(earlier_keys.dropna().to_numpy())).to_numpy()
    count = int(shared.sum())
    column = task.item_column
    expected = f"none in split '{earlier_name}'" if column else f"no row in split '{earlier_name}'"
    item = check_item(UNIQUE_ACROSS_SPLITS, column, CRITICAL, expected, count == 0)
    item["other_split"] = earlier_name
    if not count:
        return item
    item["unexpected_count"] = count
    leak = f"duplicates across splits leak {name} data"
    if column is None:
        rows = [int(i) for i in frame.index[shared][:EXAMPLES_KEPT]]  # the index holds row positions
        more = ", ..." if count > len(rows) else ""
        item["rows"] = rows
        item["message"] = (
            f"{count} row(s) also in split '{earlier_name}' (rows {str(rows)[1:-1]}{more} of {name}; {leak})"
        )
        return item
    shown = "path" if task.family == "image" and "path" in frame.columns else column
    item["unexpected_values"] = [_plain(v) for v in frame.loc[shared, shown].head(EXAMPLES_KEPT)]
    item["message"] = f"{count} {task.noun} also in split '{earlier_name}' ({leak})"
    return item


def row_hashes(frame: pd.DataFrame) -> pd.Series:
    """One 64-bit hash per row over all columns, in column order."""
    columns = {i: _hashable(frame.iloc[:, i]) for i in range(frame.shape[1])}
    return pd.util.hash_pandas_object(pd.DataFrame(columns), index=False)


def _hashable(series: pd.Series) -> pd.Series:
    """Numbers by value whatever their dtype (2 == 2.0), anything else by its text; missing stays missing."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.astype("float64")
    return series.astype(str).where(series.notna(), None)


def check_item(
    kind: str, column: str | None, severity: str, expected: str, success: bool, observed: Any = None
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
