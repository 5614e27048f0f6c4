"""Sensitive columns: their values never reach Data Docs, results.json, error lines, logs or quarantine files.

Validation results carry sample values by default (GE's partial_unexpected_list, observed values, exception
messages). For an expectation or check on a sensitive column every value becomes "***"; counts and shares
stay, so a report still says how much failed, only not what. Columns are sensitive when
`validate.sensitive_columns` or the suite's meta.shipyard.sensitive_columns names them.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import pandas as pd

from tasks.contract import suite_settings

MASK = "***"

# Result fields that hold counts, shares or row positions, never values: kept as they are (numbers only).
SAFE_KEYS = frozenset(
    {
        "element_count",
        "missing_count",
        "missing_percent",
        "unexpected_count",
        "unexpected_percent",
        "unexpected_percent_total",
        "unexpected_percent_nonmissing",
        "count",
        "partial_unexpected_index_list",
        "unexpected_index_list",
    }
)
DOMAIN_KEYS = ("column", "column_A", "column_B")
QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def sensitive_columns(names: Iterable[str], suite: Any) -> frozenset[str]:
    """The params' sensitive columns plus those the suite's meta.shipyard names."""
    listed = suite_settings(suite).get("sensitive_columns") or []
    if isinstance(listed, str):
        listed = [listed]
    return frozenset(str(c) for c in [*names, *listed])


def domain_columns(kwargs: Mapping[str, Any]) -> set[str]:
    """The columns an expectation looks at (one, a pair, or a list)."""
    columns = {str(kwargs[k]) for k in DOMAIN_KEYS if kwargs.get(k) is not None}
    return columns | {str(c) for c in kwargs.get("column_list") or []}


def mask_value(value: Any, safe: bool = False) -> Any:
    """Every value in a (nested) result masked; numbers under SAFE_KEYS, None and booleans kept."""
    if isinstance(value, Mapping):
        return {k: mask_value(v, safe or k in SAFE_KEYS) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(v, safe) for v in value]
    if value is None or isinstance(value, bool):
        return value
    if safe and isinstance(value, numbers.Number):
        return value
    return MASK


def scrub_text(text: str, keep: Collection[str] = ()) -> str:
    """Quoted values in a message masked (Python and GE quote values with repr); column names kept."""
    return QUOTED.sub(lambda m: m.group(0) if m.group(0)[1:-1] in keep else f"'{MASK}'", text)


def mask_result(result: Any, sensitive: Collection[str]) -> None:
    """Mask one GE ExpectationValidationResult in place when its expectation looks at a sensitive column."""
    columns = domain_columns(result.expectation_config.kwargs)
    if not sensitive or not columns & set(sensitive):
        return
    outcome = dict(result.result or {})
    observed = outcome.get("observed_value")
    result.result = mask_value(outcome)
    if _is_count(result.expectation_config.type, observed):
        result.result["observed_value"] = observed
    info = result.exception_info
    if info:
        result.exception_info = _scrub_info(info, columns)


def _is_count(kind: str, observed: Any) -> bool:
    """A count or share of values (unique values, proportion unique) reveals no value: it is kept.
    A min, max, mean or median is a value, or close to one: it is masked."""
    number = isinstance(observed, numbers.Number) and not isinstance(observed, bool)
    return number and ("count" in kind or "proportion" in kind)


def _scrub_info(info: Mapping[str, Any], keep: Collection[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in info.items():
        if isinstance(value, Mapping):
            out[key] = _scrub_info(value, keep)
        elif isinstance(value, str) and key in ("exception_message", "exception_traceback"):
            out[key] = scrub_text(value, keep)
        else:
            out[key] = value
    return out


def mask_item(item: dict[str, Any], sensitive: Collection[str]) -> dict[str, Any]:
    """A report item (GE's or a shipyard check's) with the values of sensitive columns masked."""
    columns = {item.get("column"), *item.get("columns", [])} - {None}
    if not sensitive or not columns & set(sensitive):
        return item
    out = dict(item)
    shown = [*(item.get("unexpected_values") or [])]
    if isinstance(item.get("observed_value"), Mapping):
        shown += list(item["observed_value"])
    for key in ("unexpected_values", "observed_value", "details"):
        if key in out:
            out[key] = mask_value(out[key])
    if isinstance(out.get("message"), str):
        out["message"] = _scrub_values(out["message"], shown)
    return out


def _scrub_values(text: str, values: Iterable[Any]) -> str:
    """A shipyard message with the values it quotes (as repr) masked."""
    for value in values:
        if isinstance(value, str):  # numbers are left: "3" would hit every count in the message
            text = text.replace(repr(value), f"'{MASK}'")
    return text


def mask_frame(frame: pd.DataFrame, sensitive: Collection[str]) -> pd.DataFrame:
    """The frame with every present value of a sensitive column replaced by "***" (missing stays missing)."""
    out = frame
    for column in [c for c in frame.columns if str(c) in set(sensitive)]:
        if out is frame:
            out = frame.copy()
        values = frame[column].astype(object)
        out[column] = values.where(values.isna(), MASK)
    return out
