"""The data contract: inferred from reference data when the user gives none, turned into a GE suite.

Great Expectations 1.x has no profiler, so inference is ours: every column with the kind training will
treat it as (`features.column_kind`), its null tolerance, a widened numeric range, the label set, the
value set of a categorical column with few values, "not constant" for a column that clearly varies, a
row-count band and the duplicate rate. Sensitive columns get no rule derived from their values. The
suite built from a contract is plain GE 1.x JSON that a user can edit, commit and point `validate.suite`
at; its meta["shipyard"] keeps the settings readers need (`suite_settings`). Great Expectations is
imported inside the functions that need it.
"""

from __future__ import annotations

import functools
import json
import math
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import Field

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

# What the numeric type check accepts: the text of a finite number as pandas parses it (floats are checked
# as str(value), so ±inf fails with the value shown). Values that pandas cannot parse stay raw in the
# validated frame and fail this check too.
NUMBER_REGEX = r"(?i)^\s*[-+]?(\d+(\.\d*)?|\.\d+)(e[-+]?\d+)?\s*$"

# A categorical feature with at most this many distinct values (and fewer than half the rows) gets its
# observed value set as a (warning) domain.
MAX_DOMAIN_VALUES = 50
ROW_BAND = 10  # warning when a batch has fewer than rows/ROW_BAND or more than rows*ROW_BAND rows
# "Not constant" is inferred only where an honest batch of rows/ROW_BAND rows is constant less often than
# this: a sparse flag column may well be constant in a small validation split.
CONSTANT_CHANCE = 1e-6

# mostly = 1 - max_null_fraction, lowered a hair so that float rounding never fails an exact tolerance.
_MOSTLY_SLACK = 1e-9


class InferredContract(Contract):
    """A contract inferred from reference data: `Contract`'s rules plus what only inference knows."""

    rows: int = Field(0, ge=0)  # rows of the reference data (the row-count band)
    domains: list[str] = Field(default_factory=list)  # categorical columns whose `values` were observed
    varying: list[str] = Field(default_factory=list)  # columns that must not be constant
    sensitive_columns: list[str] = Field(default_factory=list)  # no rule derived from their values


def infer_contract(
    train: pd.DataFrame, target: str | None, params: ValidateParams, sensitive: Iterable[str] = ()
) -> InferredContract:
    """A contract that the reference data passes, loose enough for honest val/test/serving data.

    Numeric ranges are widened by `range_margin` x (max - min) on each side (kept at >= 0 when every
    training value is >= 0); null tolerance is the observed share plus `null_margin`. A categorical
    feature with few distinct values gets them as its domain (built as a warning: an unseen category is
    legitimate at inference, but worth a report); the target gets the training labels. Sensitive columns
    (`params.sensitive_columns` and `sensitive`) get neither value sets nor ranges. `target` None: no
    label rules.
    """
    if target is not None and target not in train.columns:
        raise ShipyardError(
            f"training split: label column '{target}' not found; columns: {list(train.columns)}"
        )
    hidden = set(params.sensitive_columns) | set(sensitive)
    columns: dict[str, ColumnContract] = {}
    domains = []
    for name in train.columns:
        series = train[name]
        kind = column_kind(series)
        if name == target:
            columns[name] = ColumnContract(type=kind, max_null_fraction=0.0)
            continue
        observed = float(series.isna().mean()) if len(series) else 0.0
        shown = name not in hidden
        low, high = (
            widened_range(series, params.range_margin) if kind == "numeric" and shown else (None, None)
        )
        values = category_domain(series) if kind == "categorical" and shown else None
        if values is not None:
            domains.append(name)
        columns[name] = ColumnContract(
            type=kind,
            max_null_fraction=min(1.0, observed + params.null_margin),
            min=low,
            max=high,
            values=values,
        )
    batch = math.ceil(len(train) / ROW_BAND)
    return InferredContract(
        columns=columns,
        labels=label_values(train[target]) if target is not None and target not in hidden else None,
        min_rows=1,
        max_rows=None,
        max_duplicate_fraction=params.max_duplicate_fraction,
        rows=len(train),
        domains=domains,
        varying=[str(name) for name in train.columns if clearly_varies(train[name], batch)],
        sensitive_columns=sorted(str(c) for c in hidden),
    )


def category_domain(series: pd.Series) -> list[Any] | None:
    """The observed values of a categorical column with few of them (<= 50 and < half the rows), else None."""
    values = label_values(series)
    if not values or len(values) > MAX_DOMAIN_VALUES or len(values) >= len(series) / 2:
        return None
    return values


def clearly_varies(series: pd.Series, batch_rows: int) -> bool:
    """Whether `batch_rows` honest rows are constant with a chance below CONSTANT_CHANCE.

    Rows with the most common value or a null cannot make a batch vary; with that share q, a batch of n
    rows is constant with a chance of about q**n.
    """
    counts = series.value_counts(dropna=True)
    if len(counts) < 2 or batch_rows < 1:
        return False
    stuck = (int(counts.iloc[0]) + int(series.isna().sum())) / len(series)
    return batch_rows * math.log(stuck) < math.log(CONSTANT_CHANCE)


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
    contract: Contract,
    target: str | None,
    name: str = SUITE_NAME,
    range_severity: str | None = None,
    sensitive: Iterable[str] = (),
) -> gx.ExpectationSuite:
    """One GE expectation per rule of the contract; severity in `meta` and in GE's own `severity` field.

    Table-level rules and the label rules (never missing, in `labels`) are critical whatever the label
    column's own entry says; a column's rules follow its `critical` flag, except that `range_severity`,
    when given, sets the range checks' severity (the pipeline's inferred suite makes them warnings: a
    widened training range is a guess, and one honest outlier must not stop the pipeline). An
    `InferredContract` adds its inferred domains (warnings), "not constant" (critical) and the row-count
    band (warning). The suite's meta["shipyard"] records target, task, sensitive columns and rows.
    """
    import great_expectations as gx

    E = gx.expectations
    columns = list(contract.columns)
    if target is not None and target not in contract.columns:
        columns.append(target)
    inferred = contract if isinstance(contract, InferredContract) else None
    expectations: list[Any] = [
        with_severity(E.ExpectTableColumnsToMatchSet(column_set=columns, exact_match=True), CRITICAL),
        with_severity(
            E.ExpectTableRowCountToBeBetween(min_value=contract.min_rows, max_value=contract.max_rows),
            CRITICAL,
        ),
    ]
    if inferred is not None and inferred.rows:
        band = E.ExpectTableRowCountToBeBetween(
            min_value=math.ceil(inferred.rows / ROW_BAND), max_value=inferred.rows * ROW_BAND
        )
        expectations.append(with_severity(band, WARNING))
    if contract.max_duplicate_fraction < 1 and len(columns) > 1:
        expectations.append(
            with_severity(
                E.ExpectCompoundColumnsToBeUnique(
                    column_list=columns, mostly=mostly_for(contract.max_duplicate_fraction)
                ),
                CRITICAL,
            )
        )
    domains = set(inferred.domains) if inferred is not None else set()
    for column, rules in contract.columns.items():
        if column == target:
            continue
        expectations.extend(_column_expectations(E, column, rules, range_severity, column in domains))
    if target is not None:
        expectations.extend(_label_expectations(E, contract, target))
    if inferred is not None:
        expectations.extend(
            with_severity(E.ExpectColumnUniqueValueCountToBeBetween(column=c, min_value=2), CRITICAL)
            for c in inferred.varying
        )
    hidden = set(sensitive) | set(inferred.sensitive_columns if inferred is not None else ())
    settings = shipyard_settings(target, "tabular", None, hidden, inferred.rows if inferred else None)
    return gx.ExpectationSuite(
        name=name, expectations=expectations, notes=SUITE_NOTES, meta={SETTINGS_KEY: settings}
    )


def _label_expectations(E: Any, contract: Contract, target: str) -> list[Any]:
    target_rules = contract.columns.get(target)
    out = [with_severity(E.ExpectColumnValuesToNotBeNull(column=target), CRITICAL)]
    labels = contract.labels if contract.labels is not None else (target_rules and target_rules.values)
    if labels is not None:
        out.append(
            with_severity(E.ExpectColumnValuesToBeInSet(column=target, value_set=list(labels)), CRITICAL)
        )
    return out


def _column_expectations(
    E: Any, column: str, rules: ColumnContract, range_severity: str | None, domain: bool = False
) -> list[Any]:
    """A column's rules with their severities; an inferred domain (`domain`) is only a warning."""
    severity = CRITICAL if rules.critical else WARNING
    out = []
    if rules.max_null_fraction < 1:
        not_null = E.ExpectColumnValuesToNotBeNull(column=column, mostly=mostly_for(rules.max_null_fraction))
        out.append(with_severity(not_null, severity))
    if rules.type == "numeric":
        out.append(
            with_severity(E.ExpectColumnValuesToMatchRegex(column=column, regex=NUMBER_REGEX), severity)
        )
        if rules.min is not None or rules.max is not None:
            between = E.ExpectColumnValuesToBeBetween(column=column, min_value=rules.min, max_value=rules.max)
            out.append(with_severity(between, range_severity or severity))
    if rules.values is not None:
        in_set = E.ExpectColumnValuesToBeInSet(column=column, value_set=list(rules.values))
        out.append(with_severity(in_set, WARNING if domain else severity))
    return out


def shipyard_settings(
    target: str | None,
    task: str,
    text_column: str | None,
    sensitive: Iterable[str],
    rows: int | None,
) -> dict[str, Any]:
    """What a suite's meta["shipyard"] holds (read back with `suite_settings`)."""
    return {
        "target": target,
        "task": task,
        "text_column": text_column,
        "sensitive_columns": sorted(str(c) for c in sensitive),
        "rows": rows,
    }


def infer_suite(
    frame: pd.DataFrame,
    target: str | None,
    params: ValidateParams,
    *,
    text_column: str | None = None,
    sensitive: Iterable[str] = (),
    strict: bool = True,
) -> gx.ExpectationSuite:
    """The suite `contract infer` writes: tabular rules, or the text family's when `text_column` is given.

    `strict` (an owned contract) makes the numeric ranges critical; the pipeline's automatic suite keeps
    them warnings.
    """
    hidden = set(params.sensitive_columns) | set(sensitive)
    if text_column is None:
        contract = infer_contract(frame, target, params, hidden)
        return build_suite(contract, target, range_severity=None if strict else WARNING)
    from tasks.contract_families import Task, infer_family_suite

    if target is None:
        raise ShipyardError("text data needs its label column: give --target")
    suite = infer_family_suite(
        frame, target, Task("text", text_column), params, range_severity=CRITICAL if strict else WARNING
    )
    settings = shipyard_settings(target, "text", text_column, hidden, len(frame))
    suite.meta = {**(suite.meta or {}), SETTINGS_KEY: settings}
    return suite


@functools.cache
def use_number_fast_path() -> None:
    """Let GE's pandas regex metric answer NUMBER_REGEX from the dtype for int and float columns.

    A numeric column holds no text, so its values match NUMBER_REGEX exactly where they are finite (the
    text of a finite float or an int always matches, of ±inf never; nulls are not checked). GE's own
    implementation formats every value as text first: 2.3 s per million floats, the bulk of validating
    a numeric table. Results are unchanged; other regexes and other dtypes take GE's own path.
    """
    import logging

    from great_expectations.execution_engine import PandasExecutionEngine
    from great_expectations.expectations.metrics.column_map_metrics.column_values_match_regex import (
        ColumnValuesMatchRegex,
    )
    from great_expectations.expectations.metrics.map_metric_provider import column_condition_partial

    registry = logging.getLogger("great_expectations.expectations.registry")
    level = registry.level
    registry.setLevel(logging.ERROR)  # re-registering a metric logs a warning per metric function
    try:

        class ColumnValuesMatchRegexByDtype(ColumnValuesMatchRegex):
            @column_condition_partial(engine=PandasExecutionEngine)
            def _pandas(cls, column, regex, **kwargs):
                if regex == NUMBER_REGEX and is_plain_number_dtype(column):
                    return pd.Series(np.isfinite(column.to_numpy(dtype="float64")), index=column.index)
                with warnings.catch_warnings():  # "has match groups": GE's own path warns the same
                    warnings.simplefilter("ignore", UserWarning)
                    return column.astype(str).str.contains(regex)

    finally:
        registry.setLevel(level)


def is_plain_number_dtype(series: pd.Series) -> bool:
    """An int or float dtype (not bool, not object): a column that cannot hold text."""
    return pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)


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
    """JSON-ready python values: numpy scalars unwrapped, NaN as None, ±inf as text."""
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
    if isinstance(value, float) and math.isinf(value):
        return str(value)  # "inf" / "-inf": JSON has no infinity
    return value
