"""Feature preprocessing: column kinds, fitting on the training split only, encoding frames and records."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tasks.errors import ShipyardError
from tasks.features import (
    CategoricalFeature,
    FeatureSpec,
    NumericFeature,
    column_kind,
    encode_frame,
    encode_labels,
    encode_records,
    fit_features,
    label_values,
)

TARGET = "label"


def train_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "size": [1.0, 2.0, None, 5.0],
            "count": ["3", " 4", "5.5", None],  # numbers stored as text
            "colour": ["red", "blue", "red", None],
            TARGET: ["yes", "no", "yes", "no"],
        }
    )


# ---- column_kind --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "dtype", "kind"),
    [
        ([1, 2, 3], "int64", "numeric"),
        ([1.5, None, 3.0], "float64", "numeric"),
        (["1", "2.5", " 3 ", None], object, "numeric"),
        (["1", "2.5", "3"], "str", "numeric"),
        (["red", "blue", None], object, "categorical"),
        (["red", "blue"], "str", "categorical"),
        (["1", "two", "3"], object, "categorical"),  # a third are not numbers
        ([True, False, True], "bool", "categorical"),
        ([True, None, False], object, "categorical"),
        ([None, None], object, "numeric"),  # nothing to say otherwise
    ],
)
def test_column_kind(values: list, dtype: object, kind: str) -> None:
    assert column_kind(pd.Series(values, dtype=dtype)) == kind


def test_column_kind_tolerates_a_few_stray_tokens_then_fit_names_them() -> None:
    values = [str(i) for i in range(39)] + ["n/a"]  # 97.5 % numbers
    frame = pd.DataFrame({"reading": values, TARGET: [0, 1] * 20})
    assert column_kind(frame["reading"]) == "numeric"
    with pytest.raises(ShipyardError, match=r"column 'reading': expected numbers, got \['n/a'\]"):
        fit_features(frame, TARGET)


# ---- fit_features -------------------------------------------------------------------------------------


def test_fit_uses_the_statistics_of_the_frame_given() -> None:
    spec = fit_features(train_frame(), TARGET)
    assert spec.columns == ["size", "count", "colour"]  # target excluded; numeric first
    size, count = spec.numeric
    filled = np.array([1.0, 2.0, 2.0, 5.0])  # median of present values fills the gap
    assert (size.name, size.fill) == ("size", 2.0)
    assert (size.mean, size.std) == pytest.approx((filled.mean(), filled.std()))
    filled = np.array([3.0, 4.0, 5.5, 4.0])
    assert count.fill == 4.0 and count.mean == pytest.approx(filled.mean())
    assert count.std == pytest.approx(filled.std())
    assert spec.categorical == [CategoricalFeature(name="colour", categories=["blue", "red"])]


def test_fit_sees_only_the_training_split() -> None:
    train = train_frame()
    val = pd.DataFrame(
        {"size": [100.0, 200.0], "count": ["9", "9"], "colour": ["green", "green"], TARGET: ["no", "yes"]}
    )
    spec = fit_features(train, TARGET)
    assert spec == fit_features(train.copy(), TARGET)
    assert spec.numeric[0].mean == pytest.approx(2.5) and "green" not in spec.categorical[0].categories
    codes = encode_frame(val, spec)
    assert codes[:, 2].tolist() == [0.0, 0.0]  # unseen in training -> 0
    assert codes[:, 0].tolist() == [100.0, 200.0]  # raw values; scaling happens in the network


def test_constant_and_empty_columns_do_not_divide_by_zero() -> None:
    frame = pd.DataFrame({"flat": [3.0, 3.0, 3.0], "empty": [None, None, None], TARGET: [0, 1, 0]})
    spec = fit_features(frame, TARGET)
    flat, empty = spec.numeric
    assert (flat.mean, flat.std) == (3.0, 1.0)
    assert (empty.fill, empty.std) == (0.0, 1.0)


def test_bool_and_integer_like_categories() -> None:
    frame = pd.DataFrame({"flag": [True, False, True], "grade": ["A", "B", "C"], TARGET: [0, 1, 0]})
    spec = fit_features(frame, TARGET)
    assert [c.categories for c in spec.categorical] == [["False", "True"], ["A", "B", "C"]]
    assert encode_records([{"flag": True, "grade": "C"}], spec).tolist() == [[2.0, 3.0]]


def test_no_features_besides_the_target() -> None:
    with pytest.raises(ShipyardError, match="no feature columns besides the target 'label'"):
        fit_features(pd.DataFrame({TARGET: [0, 1]}), TARGET)


# ---- encode_frame -------------------------------------------------------------------------------------


def test_encode_frame_layout() -> None:
    spec = fit_features(train_frame(), TARGET)
    x = encode_frame(train_frame(), spec)
    assert x.dtype == np.float32 and x.shape == (4, 3)
    assert x[:, 0].tolist()[:2] == [1.0, 2.0] and math.isnan(x[2, 0])  # NaN kept for the network
    assert x[:3, 1].tolist() == [3.0, 4.0, 5.5] and math.isnan(x[3, 1])
    assert x[:, 2].tolist() == [2.0, 1.0, 2.0, 0.0]  # blue=1, red=2, missing=0


def test_encode_frame_ignores_column_order_and_extra_columns() -> None:
    spec = fit_features(train_frame(), TARGET)
    shuffled = train_frame()[["colour", TARGET, "count", "size"]].assign(extra=1)
    np.testing.assert_array_equal(encode_frame(shuffled, spec), encode_frame(train_frame(), spec))


def test_encode_frame_missing_column_names_it() -> None:
    spec = fit_features(train_frame(), TARGET)
    with pytest.raises(ShipyardError, match=r"missing feature columns: \['count'\]"):
        encode_frame(train_frame().drop(columns="count"), spec)


def test_encode_frame_non_number_names_column_and_value() -> None:
    spec = fit_features(train_frame(), TARGET)
    bad = train_frame().assign(size=["1", "x", "3", "4"])
    with pytest.raises(ShipyardError, match=r"column 'size': expected numbers, got \['x'\]"):
        encode_frame(bad, spec)


# ---- encode_records -----------------------------------------------------------------------------------


def test_records_encode_like_the_frame() -> None:
    spec = fit_features(train_frame(), TARGET)
    records = train_frame().drop(columns=TARGET).astype(object).where(train_frame().notna(), None)
    from_records = encode_records(records.to_dict("records"), spec)
    np.testing.assert_array_equal(from_records, encode_frame(train_frame(), spec))


def test_records_missing_values_and_unseen_categories() -> None:
    spec = fit_features(train_frame(), TARGET)
    x = encode_records(
        [
            {"size": None, "count": "", "colour": "purple"},
            {"size": "2.5", "count": 7, "colour": None},
            {"size": float("nan"), "count": 1.0, "colour": "red", "ignored": [1, 2]},
        ],
        spec,
    )
    assert x.dtype == np.float32 and x.shape == (3, 3)
    assert math.isnan(x[0, 0]) and math.isnan(x[0, 1]) and x[0, 2] == 0.0
    assert x[1].tolist() == [2.5, 7.0, 0.0]
    assert math.isnan(x[2, 0]) and x[2, 1:].tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"count": 1, "colour": "red"}, r"record 1: missing column 'size'"),
        ({"size": 1, "count": 1}, r"record 1: missing column 'colour'"),
        (
            {"size": "big", "count": 1, "colour": "red"},
            r"record 1: column 'size': expected a number, got 'big'",
        ),
        (
            {"size": True, "count": 1, "colour": "red"},
            r"record 1: column 'size': expected a number, got True",
        ),
        (
            {"size": [1], "count": 1, "colour": "red"},
            r"record 1: column 'size': expected a number, got \[1\]",
        ),
        ("size=1", r"record 1: expected an object of column: value"),
    ],
)
def test_record_errors_name_row_and_column(record: object, message: str) -> None:
    spec = fit_features(train_frame(), TARGET)
    good = {"size": 1, "count": 2, "colour": "red"}
    with pytest.raises(ShipyardError, match=message):
        encode_records([good, record], spec)


def test_no_records_give_an_empty_matrix() -> None:
    spec = fit_features(train_frame(), TARGET)
    assert encode_records([], spec).shape == (0, 3)


def test_numeric_only_and_categorical_only_specs() -> None:
    numeric = FeatureSpec(numeric=[NumericFeature(name="a", fill=0, mean=0, std=1)], categorical=[])
    assert encode_records([{"a": 2}], numeric).tolist() == [[2.0]]
    categorical = FeatureSpec(numeric=[], categorical=[CategoricalFeature(name="c", categories=["1", "2"])])
    assert encode_records([{"c": 2.0}, {"c": "1"}, {"c": 3}], categorical).tolist() == [[2.0], [1.0], [0.0]]


# ---- labels -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["yes", "no", "yes", None], ["no", "yes"]),
        ([2, 0, 1, 0], [0, 1, 2]),
        ([True, False, True], [False, True]),
    ],
)
def test_label_values_are_sorted_plain_values(values: list, expected: list) -> None:
    labels = label_values(pd.Series(values))
    assert labels == expected
    assert [type(v) for v in labels] == [type(v) for v in expected]  # plain Python, JSON-ready


def test_encode_labels() -> None:
    labels = label_values(pd.Series(["b", "a", "c"]))
    codes = encode_labels(pd.Series(["c", "a", "b", "a"]), labels)
    assert codes.dtype == np.int64 and codes.tolist() == [2, 0, 1, 0]
    with pytest.raises(ShipyardError, match=r"labels not seen in training: \['z'\]"):
        encode_labels(pd.Series(["a", "z"]), labels)
