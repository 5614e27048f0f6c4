"""Feature preprocessing fitted on the training split, shared by training and serving.

A row becomes one float32 vector: numeric columns as raw floats (NaN where missing), then one code per
categorical column (0 = missing or unseen, i+1 = the i-th category seen in training). Imputation and
standardisation happen inside the network (and so inside the ONNX graph) from the statistics kept here;
only the category lookup runs outside it. This module needs numpy and pandas only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

from tasks.errors import ShipyardError

NUMERIC_SHARE = 0.95  # an object column is numeric when this share of its non-null values parse as numbers

ColumnKind = Literal["numeric", "categorical"]


class NumericFeature(BaseModel):
    name: str
    fill: float
    mean: float
    std: float


class CategoricalFeature(BaseModel):
    name: str
    categories: list[str]


class FeatureSpec(BaseModel):
    numeric: list[NumericFeature]
    categorical: list[CategoricalFeature]

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.numeric] + [f.name for f in self.categorical]


def column_kind(series: pd.Series) -> ColumnKind:
    """Numeric for numeric dtypes and for text columns that are (almost) all numbers; else categorical."""
    if pd.api.types.is_bool_dtype(series):
        return "categorical"
    if pd.api.types.is_numeric_dtype(series):
        return "numeric"
    present = series.dropna()
    if present.empty:
        return "numeric"
    parsed = pd.to_numeric(present.astype(str).str.strip(), errors="coerce")
    return "numeric" if parsed.notna().mean() >= NUMERIC_SHARE else "categorical"


def category_key(value: Any) -> str | None:
    """The string a categorical value is looked up by (None when missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def to_numeric(series: pd.Series, column: str) -> np.ndarray:
    """Floats for a numeric column; a value that is not a number is an error naming column and values."""
    values = pd.to_numeric(series, errors="coerce").astype("float64")
    bad = values.isna() & series.notna() & (series.astype(str).str.strip() != "")
    if bad.any():
        examples = series[bad].astype(str).unique()[:3].tolist()
        raise ShipyardError(f"column '{column}': expected numbers, got {examples}")
    return values.to_numpy()


def fit_features(frame: pd.DataFrame, target: str) -> FeatureSpec:
    """Fit the preprocessing on the training split only."""
    numeric, categorical = [], []
    for column in frame.columns:
        if column == target:
            continue
        series = frame[column]
        if column_kind(series) == "numeric":
            values = to_numeric(series, column)
            present = values[~np.isnan(values)]
            fill = float(np.median(present)) if present.size else 0.0
            filled = np.where(np.isnan(values), fill, values)
            std = float(filled.std())
            numeric.append(
                NumericFeature(name=column, fill=fill, mean=float(filled.mean()), std=std if std > 0 else 1.0)
            )
        else:
            keys = {category_key(v) for v in series.tolist()} - {None}
            categorical.append(CategoricalFeature(name=column, categories=sorted(keys)))
    if not numeric and not categorical:
        raise ShipyardError(f"no feature columns besides the target '{target}'")
    return FeatureSpec(numeric=numeric, categorical=categorical)


def encode_frame(frame: pd.DataFrame, spec: FeatureSpec) -> np.ndarray:
    """A frame with (at least) the spec's columns -> float32 matrix for the network."""
    missing = [c for c in spec.columns if c not in frame.columns]
    if missing:
        raise ShipyardError(f"missing feature columns: {missing}")
    parts = [to_numeric(frame[f.name], f.name) for f in spec.numeric]
    for feature in spec.categorical:
        lookup = {key: i + 1 for i, key in enumerate(feature.categories)}
        parts.append(np.array([lookup.get(category_key(v), 0) for v in frame[feature.name].tolist()]))
    return np.column_stack(parts).astype(np.float32) if parts else np.zeros((len(frame), 0), np.float32)


def encode_records(records: Iterable[Mapping[str, Any]], spec: FeatureSpec) -> np.ndarray:
    """JSON records (one dict per row) -> float32 matrix; errors name the row and the column."""
    lookups = [{key: i + 1 for i, key in enumerate(f.categories)} for f in spec.categorical]
    rows = []
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ShipyardError(f"record {index}: expected an object of column: value")
        row = []
        for feature in spec.numeric:
            row.append(_record_number(record, feature.name, index))
        for feature, lookup in zip(spec.categorical, lookups, strict=True):
            if feature.name not in record:
                raise ShipyardError(f"record {index}: missing column '{feature.name}'")
            row.append(lookup.get(category_key(record[feature.name]), 0))
        rows.append(row)
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), len(spec.columns))


def _record_number(record: Mapping[str, Any], column: str, index: int) -> float:
    if column not in record:
        raise ShipyardError(f"record {index}: missing column '{column}'")
    value = record[column]
    if value is None or value == "":
        return math.nan
    if isinstance(value, bool):
        raise ShipyardError(f"record {index}: column '{column}': expected a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ShipyardError(f"record {index}: column '{column}': expected a number, got {value!r}") from None


def label_values(series: pd.Series) -> list[Any]:
    """The sorted label set as plain JSON values (ints stay ints, strings stay strings)."""
    values = sorted(series.dropna().unique().tolist(), key=lambda v: (str(type(v)), v))
    return [v.item() if hasattr(v, "item") else v for v in values]


def encode_labels(series: pd.Series, labels: list[Any]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    codes = series.map(index)
    if codes.isna().any():
        unknown = series[codes.isna()].unique()[:3].tolist()
        raise ShipyardError(f"labels not seen in training: {unknown}")
    return codes.to_numpy(dtype=np.int64, copy=True)
