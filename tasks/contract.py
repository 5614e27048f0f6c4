"""The data contract: inferred from the training split when the user gives none, turned into a GE suite.

Great Expectations 1.x has no profiler, so inference is ours: every column with the kind training will
treat it as (`features.column_kind`), its null tolerance, a widened numeric range, and the label set.
The suite built from a contract is plain GE 1.x JSON that a user can edit, commit and point
`validate.suite` at. Great Expectations is imported inside the functions that need it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tasks.config import ColumnContract, Contract, ValidateParams
from tasks.errors import ShipyardError
from tasks.features import column_kind, label_values

if TYPE_CHECKING:
    import great_expectations as gx

SUITE_NAME = "shipyard"
SETTINGS_KEY = "shipyard"  # the suite meta key holding shipyard's settings (see suite_settings)
CRITICAL = "critical"
WARNING = "warning"
SEVERITIES = ("critical", "warning", "info")
SUITE_NOTES = (
    "shipyard data contract (Great Expectations 1.x suite). A failed expectation with severity "
    "'critical' stops the pipeline before training; 'warning' and 'info' are only reported. "
    "Set meta.severity to change it."
)

# What the numeric type check accepts: the text of a number as pandas parses it (floats are checked as
# str(value)). Values that pandas cannot parse stay raw in the validated frame and fail this check.
NUMBER_REGEX = r"(?i)^\s*[-+]?((\d+(\.\d*)?|\.\d+)(e[-+]?\d+)?|inf(inity)?)\s*$"

# mostly = 1 - max_null_fraction, lowered a hair so that float rounding never fails an exact tolerance.
_MOSTLY_SLACK = 1e-9


def infer_contract(train: pd.DataFrame, target: str, params: ValidateParams) -> Contract:
    """A contract that the training split passes, loose enough for honest val/test/serving data.

    Numeric ranges are widened by `range_margin` x (max - min) on each side (kept at >= 0 when every
    training value is >= 0); null tolerance is the observed share plus `null_margin`. Categorical features
    get no value set (unseen categories are legitimate at inference); the target gets the training labels.
    """
    if target not in train.columns:
        raise ShipyardError(
            f"training split: label column '{target}' not found; columns: {list(train.columns)}"
        )
    columns: dict[str, ColumnContract] = {}
    for name in train.columns:
        series = train[name]
        kind = column_kind(series)
        if name == target:
            columns[name] = ColumnContract(type=kind, max_null_fraction=0.0)
            continue
        observed = float(series.isna().mean()) if len(series) else 0.0
        low, high = widened_range(series, params.range_margin) if kind == "numeric" else (None, None)
        columns[name] = ColumnContract(
            type=kind,
            max_null_fraction=min(1.0, observed + params.null_margin),
            min=low,
            max=high,
        )
    return Contract(
        columns=columns,
        labels=label_values(train[target]),
        min_rows=1,
        max_rows=None,
        max_duplicate_fraction=params.max_duplicate_fraction,
    )


def widened_range(series: pd.Series, margin: float) -> tuple[float | None, float | None]:
    """The observed finite range widened by margin x span on each side; kept >= 0 when every value is."""
    values = pd.to_numeric(series, errors="coerce").astype("float64").to_numpy()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None, None
    low, high = float(values.min()), float(values.max())
    span = high - low or abs(high) or 1.0
    wide_low, wide_high = low - margin * span, high + margin * span
    if low >= 0:
        wide_low = max(wide_low, 0.0)
    return wide_low, wide_high


def build_suite(
    contract: Contract, target: str, name: str = SUITE_NAME, range_severity: str | None = None
) -> gx.ExpectationSuite:
    """One GE expectation per rule of the contract; severity in `meta` and in GE's own `severity` field.

    Table-level rules and the label rules (never missing, in `labels`) are critical whatever the label
    column's own entry says; a column's rules follow its `critical` flag, except
    that `range_severity`, when given, sets the range checks' severity (the inferred suite makes them
    warnings: a widened training range is a guess, and one honest outlier must not stop the pipeline).
    """
    import great_expectations as gx

    E = gx.expectations
    columns = list(contract.columns)
    if target not in contract.columns:
        columns.append(target)
    expectations: list[Any] = [
        with_severity(E.ExpectTableColumnsToMatchSet(column_set=columns, exact_match=True), CRITICAL),
        with_severity(
            E.ExpectTableRowCountToBeBetween(min_value=contract.min_rows, max_value=contract.max_rows),
            CRITICAL,
        ),
    ]
    if contract.max_duplicate_fraction < 1 and len(columns) > 1:
        expectations.append(
            with_severity(
                E.ExpectCompoundColumnsToBeUnique(
                    column_list=columns, mostly=mostly_for(contract.max_duplicate_fraction)
                ),
                CRITICAL,
            )
        )
    for column, rules in contract.columns.items():
        if column == target:
            continue
        expectations.extend(_column_expectations(E, column, rules, range_severity))
    target_rules = contract.columns.get(target)
    expectations.append(with_severity(E.ExpectColumnValuesToNotBeNull(column=target), CRITICAL))
    labels = contract.labels if contract.labels is not None else (target_rules and target_rules.values)
    if labels is not None:
        expectations.append(
            with_severity(E.ExpectColumnValuesToBeInSet(column=target, value_set=list(labels)), CRITICAL)
        )
    return gx.ExpectationSuite(name=name, expectations=expectations, notes=SUITE_NOTES)


def _column_expectations(E: Any, column: str, rules: ColumnContract, range_severity: str | None) -> list[Any]:
    severity = CRITICAL if rules.critical else WARNING
    out, ranges = [], []
    if rules.max_null_fraction < 1:
        out.append(E.ExpectColumnValuesToNotBeNull(column=column, mostly=mostly_for(rules.max_null_fraction)))
    if rules.type == "numeric":
        out.append(E.ExpectColumnValuesToMatchRegex(column=column, regex=NUMBER_REGEX))
        if rules.min is not None or rules.max is not None:
            ranges.append(
                E.ExpectColumnValuesToBeBetween(column=column, min_value=rules.min, max_value=rules.max)
            )
    if rules.values is not None:
        out.append(E.ExpectColumnValuesToBeInSet(column=column, value_set=list(rules.values)))
    return [with_severity(e, severity) for e in out] + [
        with_severity(e, range_severity or severity) for e in ranges
    ]


def mostly_for(max_fraction: float) -> float:
    """GE's `mostly` for a tolerated fraction of failing rows."""
    return 1.0 if max_fraction <= 0 else max(0.0, 1.0 - max_fraction - _MOSTLY_SLACK)


def with_severity(expectation: Any, severity: str) -> Any:
    """Set the severity where a suite file keeps it (`meta.severity`) and in GE's own field."""
    expectation.meta = {**(expectation.meta or {}), "severity": severity}
    expectation.severity = severity
    return expectation


def severity_of(config: Any) -> str:
    """An expectation's severity: `meta.severity` when set (what the suite file says), else GE's field."""
    meta = getattr(config, "meta", None) or {}
    value = meta.get("severity") or getattr(config, "severity", None) or CRITICAL
    value = getattr(value, "value", value)
    return str(value).lower()


def numeric_columns(suite: gx.ExpectationSuite) -> set[str]:
    """Columns the suite treats as numbers: a number type check or a numeric range."""
    columns = set()
    for expectation in suite.expectations:
        config = expectation.configuration
        kwargs = config.kwargs
        if config.type == "expect_column_values_to_match_regex" and kwargs.get("regex") == NUMBER_REGEX:
            columns.add(kwargs["column"])
        elif config.type == "expect_column_values_to_be_between":
            bounds = [kwargs.get("min_value"), kwargs.get("max_value")]
            if any(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds):
                columns.add(kwargs["column"])
    return columns


def suite_to_dict(suite: gx.ExpectationSuite) -> dict[str, Any]:
    """The suite as GE 1.x JSON, without run-time ids, ready to edit and commit."""
    expectations = []
    for expectation in suite.expectations:
        config = expectation.configuration
        item: dict[str, Any] = {"type": config.type, "kwargs": json_value(dict(config.kwargs))}
        item["meta"] = json_value(dict(config.meta or {}))
        item["severity"] = severity_of(config)
        if config.notes:
            item["notes"] = config.notes
        expectations.append(item)
    out: dict[str, Any] = {"name": suite.name}
    if suite.notes:
        out["notes"] = suite.notes
    out["expectations"] = expectations
    out["meta"] = json_value(dict(suite.meta or {}))
    return out


def load_suite(path: str | Path) -> gx.ExpectationSuite:
    """Read a GE 1.x suite JSON file; every problem is an error naming the file (and the expectation)."""
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShipyardError(f"{path}: suite file not found (validate.suite in params.yaml)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ShipyardError(f"{path}: not a readable suite JSON file: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("expectations"), list):
        raise ShipyardError(f"{path}: expected a GE suite: an object with a list of 'expectations'")
    expectations = []
    for index, item in enumerate(data["expectations"], start=1):
        kind = item.get("type") if isinstance(item, dict) else None
        try:
            if not isinstance(item, dict) or not isinstance(kind, str):
                raise ValueError("expected an object with 'type' and 'kwargs'")
            fields = ("type", "kwargs", "meta", "notes", "description", "severity")
            config = ExpectationConfiguration(
                **{k: item[k] for k in fields if k in item and item[k] is not None}
            )
            severity = severity_of(config)
            if severity not in SEVERITIES:
                raise ValueError(f"severity must be one of {list(SEVERITIES)}, got {severity!r}")
            expectations.append(config.to_domain_obj())
        except Exception as err:  # GE raises several error types for a bad configuration
            message = getattr(err, "message", None) or str(err)
            raise ShipyardError(
                f"{path}: expectation {index} ({kind}): {message}".replace("\n", " ")
            ) from None
    name = data.get("name") if isinstance(data.get("name"), str) and data.get("name") else SUITE_NAME
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else None
    notes = data.get("notes") if isinstance(data.get("notes"), str | list) else None
    return gx.ExpectationSuite(name=name, expectations=expectations, meta=meta, notes=notes)


def suite_settings(suite: gx.ExpectationSuite | dict[str, Any]) -> dict[str, Any]:
    """shipyard's settings kept in a suite's `meta.shipyard`: target, task, text_column,
    sensitive_columns (values never shown), rows (of the reference data). Empty when absent."""
    meta = suite.get("meta") if isinstance(suite, dict) else getattr(suite, "meta", None)
    settings = (meta or {}).get(SETTINGS_KEY) if isinstance(meta, dict) else None
    return dict(settings) if isinstance(settings, dict) else {}


def json_value(value: Any) -> Any:
    """JSON-ready python values: numpy scalars unwrapped, NaN as None."""
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [json_value(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
