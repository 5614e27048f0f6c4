"""Requests checked against the data contract published with the model (`serve --validate-inputs`).

Export publishes the suite the validate stage used as `suite.json` beside the model (manifest `contract`,
its sha256 in `files`). `compile_contract` turns the suite's row-level rules into plain Python checks of one
request's items, so that the request path needs neither Great Expectations nor pandas:

- not null: None, NaN, or blank text in a numeric column (as the validate stage reads blank numbers);
- the number type check (the contract's NUMBER_REGEX), and any other regex, on the text of the value as
  GE matches it (`str(value)`): finite JSON numbers pass the number check (±inf as the regex says),
  booleans, lists and words do not;
- between (numeric bounds), in set, value lengths between (of the value's text, as GE measures it);
- the table's column set minus the label: a feature missing from a record (extra keys stay ignored).

Text in a numeric column is parsed as the validate stage parses it before GE sees it, so a request value and
a training value are judged alike; a value that is not a number is left to the type check and passes the
range. Texts are the values of the suite's text column, normalised as ingest stored the training texts;
images are judged by their header (width, height and mode, before any pixel is decoded); the image
suite's other columns (path, sha256) are not in a request.

One request cannot judge everything, so these rules are skipped and listed once in the start-up log: rules
on the label column, table-level rules (row count, uniqueness, aggregates), rules with `mostly` < 1 (they
tolerate a share of bad rows, which a request of a few rows cannot measure; drift checks on batches cover
them), rules with a `row_condition`, and types not listed above. A critical violation refuses the request
(422 naming row, column and rule); warning and info ones are only counted. Values of the suite's sensitive
columns are never echoed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from serving.inputs import image_header
from serving.model import LoadedModel, ServingError, inside
from tasks.contract import NUMBER_REGEX, suite_settings
from tasks.texts import normalise_texts

CRITICAL = "critical"
SEVERITIES = ("critical", "warning", "info")
NOT_NULL = "expect_column_values_to_not_be_null"
MATCH_REGEX = "expect_column_values_to_match_regex"
BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
VALUE_LENGTHS = "expect_column_value_lengths_to_be_between"
COLUMN_SET = "expect_table_columns_to_match_set"
IMAGE_COLUMNS = ("width", "height", "mode")  # what an image request's header tells
SHOWN_CHARS = 80  # an echoed text value is cut to this many characters
SET_SHOWN = 10  # members of a value set named in `expected`
VECTOR_MIN = 32  # rows from which columns of plain numbers are judged as arrays (numpy pays off)

# Text that pd.to_numeric parses, as the validate stage reads numeric columns (validate.prepare_frame):
# a finite number with blanks around it, or an infinity without; "nan", "1_000" or "1,5" stay text.
_PARSED = re.compile(r"(?i)\s*[-+]?(\d+(\.\d*)?|\.\d+)(e[-+]?\d+)?\s*|[-+]?inf(inity)?")
_ABSENT = object()  # a violation without a value to echo (a missing column, a sensitive column)
_NUMBERS = frozenset({int, float})  # bool is not one: the model refuses true/false as a number
_PLAIN = _NUMBERS | {type(None)}  # values a column may hold to be judged as one float array

Check = Callable[[Any], bool]
VectorCheck = Callable[[np.ndarray], np.ndarray]  # float64 values (NaN: missing) -> passes, elementwise


@dataclass(frozen=True)
class Rule:
    """One compiled expectation on one column: `passes` takes a non-null value (any value if `nulls`);
    `vector`, when the rule has one, judges a whole column of plain numbers at once (the same verdicts)."""

    column: str
    type: str
    severity: str
    expected: str
    passes: Check
    vector: VectorCheck | None = None
    nulls: bool = False


@dataclass(frozen=True)
class Violation:
    row: int
    column: str
    rule: str
    expected: str
    severity: str
    value: Any = _ABSENT

    def detail(self) -> dict[str, Any]:
        """The 422 detail item: row, column, rule, expected, severity and, when not masked, the value."""
        out = {"row": self.row, "column": self.column, "rule": self.rule, "expected": self.expected}
        out["severity"] = self.severity
        if self.value is not _ABSENT:
            out["value"] = self.value
        return out


@dataclass(frozen=True)
class InputContract:
    """The per-request checks of one suite, for one model family."""

    task: str
    source: str
    required: tuple[tuple[str, str, str], ...]  # (column, rule type, severity) a record must carry
    rules: tuple[tuple[str, tuple[Rule, ...]], ...]  # per column, in suite order
    numeric: frozenset[str]
    sensitive: frozenset[str]
    text_column: str | None = None
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> expectation types

    def check(self, items: Sequence[Any]) -> list[Violation]:
        """Every violation in these request items, in item order; items of the wrong shape are left to
        the decoder, which names them. Few items are judged row by row, many column by column."""
        if self.task == "text":
            items = ingested_texts(items)
        indices, rows = [], []
        for index, item in enumerate(items):
            if (row := self.row_of(item)) is not None:
                indices.append(index)
                rows.append(row)
        out: list[Violation] = []
        for index, row in zip(indices, rows, strict=True):
            if not row.keys() >= self.required_columns:
                out += [
                    Violation(index, c, r, "the column present", s)
                    for c, r, s in self.required
                    if c not in row
                ]
        if len(rows) < VECTOR_MIN:
            for index, row in zip(indices, rows, strict=True):
                self._check_row(index, row, out)
        else:
            for column, rules in self.rules:
                self._check_column(column, rules, indices, [row.get(column, _ABSENT) for row in rows], out)
        out.sort(key=lambda violation: violation.row)  # stable: suite order within a row
        return out

    @cached_property
    def required_columns(self) -> frozenset[str]:
        return frozenset(column for column, *_ in self.required)

    def row_of(self, item: Any) -> Mapping[str, Any] | None:
        """The item as the suite's columns: a record, {text column: text} or an image's header."""
        if self.task == "text":
            return {self.text_column: item} if item is None or isinstance(item, str) else None
        if self.task == "image":
            return image_header(item)
        return item if isinstance(item, Mapping) else None

    def _check_row(self, index: int, row: Mapping[str, Any], out: list[Violation]) -> None:
        for column, rules in self.rules:
            raw = row.get(column, _ABSENT)
            if raw is _ABSENT:  # a missing column: the column-set rule names it
                continue
            value = normalise(raw, column in self.numeric)
            for rule in rules:
                if (value is not None or rule.nulls) and not rule.passes(value):
                    out.append(self._violation(index, raw, rule))

    def _check_column(
        self,
        column: str,
        rules: tuple[Rule, ...],
        indices: list[int],
        values: list[Any],
        out: list[Violation],
    ) -> None:
        """One column's values: as one float array when all are plain numbers (many times faster than
        value by value), else row by row."""
        array = _as_floats(values) if all(rule.vector for rule in rules) else None
        if array is None:
            numeric = column in self.numeric
            for index, raw in zip(indices, values, strict=True):
                value = raw if raw is _ABSENT else normalise(raw, numeric)
                for rule in rules:
                    if value is not _ABSENT and (value is not None or rule.nulls) and not rule.passes(value):
                        out.append(self._violation(index, raw, rule))
            return
        for rule in rules:
            assert rule.vector is not None
            for k in np.flatnonzero(~rule.vector(array)).tolist():
                out.append(self._violation(indices[k], values[k], rule))

    def _violation(self, index: int, value: Any, rule: Rule) -> Violation:
        shown = self.shown(rule.column, value)
        return Violation(index, rule.column, rule.type, rule.expected, rule.severity, shown)

    def shown(self, column: str, value: Any) -> Any:
        """The value as a 422 may echo it: never a sensitive column's, long texts cut short."""
        if column in self.sensitive:
            return _ABSENT
        if isinstance(value, str) and len(value) > SHOWN_CHARS:
            return value[:SHOWN_CHARS] + "..."
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)  # JSON has no NaN or Infinity
        return value if isinstance(value, str | int | float | bool) or value is None else type(value).__name__

    def redact(self, message: str) -> str:
        """A decoder's error without the value of a sensitive column it quotes (`column 'x': ..., got v`)."""
        match = re.search(r"column '([^']*)'", message)
        if match and match.group(1) in self.sensitive and ", got " in message:
            return message[: message.rindex(", got ")] + " (value masked: sensitive column)"
        return message

    def describe(self) -> str:
        """One start-up line: what is checked, and what is skipped (by reason and expectation type)."""
        count = sum(len(rules) for _, rules in self.rules) + len(self.required)
        critical = sum(r.severity == CRITICAL for _, rules in self.rules for r in rules)
        critical += sum(severity == CRITICAL for *_, severity in self.required)
        line = f"validating inputs against {self.source}: {count} check(s), {critical} critical"
        if self.sensitive:
            line += f"; sensitive (values masked): {sorted(self.sensitive)}"
        if self.skipped:
            parts = [f"{reason} ({_counted(types)})" for reason, types in self.skipped.items()]
            line += "; skipped, not judged per request: " + ", ".join(parts)
        return line


def load_input_contract(model: LoadedModel) -> InputContract:
    """The checks of the suite the model's manifest names; a ServingError (refuse to start) without one."""
    name = model.manifest.get("contract")
    what = f"{model.name} {model.version}"
    if not name or model.folder is None:
        raise ServingError(
            f"{what} has no data contract (the manifest names no 'contract' suite.json), so "
            "--validate-inputs cannot check requests; export a version with its suite, or serve without "
            "--validate-inputs (serve.validate_inputs: false)"
        )
    files = model.manifest.get("files") or {}
    if name not in files:
        raise ServingError(f"{what}: contract '{name}' is not listed in the manifest's 'files'; refusing it")
    path = inside(model.folder, name, "contract")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ServingError(f"{path}: cannot read the contract: {err.strerror or err}") from None
    if hashlib.sha256(data).hexdigest() != str(files[name]).lower():
        raise ServingError(f"{path}: sha256 does not match the manifest's; refusing it")
    try:
        suite = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ServingError(f"{path}: not a readable suite JSON file: {err}") from None
    return compile_contract(suite, model.task, model.manifest.get("target"), source=str(path))


def compile_contract(
    suite: Mapping[str, Any], task: str = "tabular", target: str | None = None, source: str = "suite.json"
) -> InputContract:
    """The suite's row-level rules as per-request checks for a model of `task` (see the module doc).

    `target` is the label column when the suite's meta does not name it.
    """
    if not isinstance(suite, Mapping) or not isinstance(suite.get("expectations"), list):
        raise ServingError(f"{source}: expected a GE suite: an object with a list of 'expectations'")
    settings = suite_settings(dict(suite))
    target = settings.get("target") or target
    if settings.get("task", task) != task:
        raise ServingError(f"{source}: a contract for a {settings['task']} model, this model is {task}")
    text_column = settings.get("text_column")
    if task == "text" and not text_column:
        raise ServingError(f"{source}: meta.shipyard.text_column is missing (the column holding the text)")
    if task == "tabular" and not target:
        raise ServingError(f"{source}: cannot tell the label column (meta.shipyard.target, manifest target)")
    builder = _Builder(task, target, text_column, source)
    for index, item in enumerate(suite["expectations"], start=1):
        builder.add(index, item)
    return InputContract(
        task=task,
        source=source,
        required=tuple(builder.required),
        rules=tuple((column, tuple(rules)) for column, rules in builder.rules.items()),
        numeric=frozenset(builder.numeric),
        sensitive=frozenset(str(c) for c in settings.get("sensitive_columns") or []),
        text_column=text_column,
        skipped=builder.skipped,
    )


def ingested_texts(items: Sequence[Any]) -> list[Any]:
    """The texts as ingest stored the training texts (NFC, newlines, stripped); other items as sent."""
    texts = [item for item in items if isinstance(item, str)]
    if not texts:
        return list(items)
    normalised = iter(normalise_texts(pd.Series(texts, dtype=object)).tolist())
    return [next(normalised) if isinstance(item, str) else item for item in items]


def normalise(value: Any, numeric: bool) -> Any:
    """None for a missing value; in a numeric column, text parsed as the validate stage parses it."""
    if type(value) is float:
        return None if math.isnan(value) else value
    if numeric and isinstance(value, str):
        if not value.strip():
            return None
        if _PARSED.fullmatch(value):
            return float(value)
    return value


class _Builder:
    """Sorts a suite's expectations into per-request rules, required columns and skipped ones."""

    def __init__(self, task: str, target: str | None, text_column: str | None, source: str) -> None:
        self.task, self.target, self.text_column, self.source = task, target, text_column, source
        self.required: list[tuple[str, str, str]] = []
        self.rules: dict[str, list[Rule]] = {}
        self.numeric: set[str] = set()
        self.skipped: dict[str, list[str]] = {}

    def add(self, index: int, item: Any) -> None:
        if not isinstance(item, Mapping) or not isinstance(item.get("type"), str):
            raise ServingError(f"{self.source}: expectation {index}: expected an object with 'type'")
        kind, kwargs = item["type"], item.get("kwargs") or {}
        severity = _severity(item, f"{self.source}: expectation {index} ({kind})")
        reason = self.skip_reason(kind, kwargs)
        if reason:
            self.skipped.setdefault(reason, []).append(kind)
            return
        where = f"{self.source}: expectation {index} ({kind})"
        if kind == COLUMN_SET:
            columns = kwargs.get("column_set") or []
            self.required += [(str(c), kind, severity) for c in columns if c != self.target]
            return
        column = str(kwargs["column"])
        try:
            passes, vector, expected = BUILDERS[kind](kwargs)
        except (KeyError, TypeError, ValueError, re.error) as err:
            raise ServingError(f"{where}: cannot be checked: {err}") from None
        if _is_number_rule(kind, kwargs):
            self.numeric.add(column)
        rule = Rule(column, kind, severity, expected, passes, vector, nulls=kind == NOT_NULL)
        self.rules.setdefault(column, []).append(rule)

    def skip_reason(self, kind: str, kwargs: Mapping[str, Any]) -> str | None:
        """Why a rule cannot be judged on one request; None when it can."""
        if kind == COLUMN_SET:
            return None if self.task == "tabular" else "not request columns"
        if kind not in BUILDERS:
            column_rule = kind.startswith(("expect_column_values_", "expect_column_value_"))
            table_rule = kind == "expect_column_values_to_be_unique" or not column_rule
            return "table-level" if table_rule else "not supported per request"
        column = kwargs.get("column")
        if column is not None and column == self.target:
            return f"on the label '{self.target}'"
        if self.task == "text" and column != self.text_column:
            return "not in a text request"
        if self.task == "image" and column not in IMAGE_COLUMNS:
            return "not in an image request"
        if kwargs.get("row_condition"):
            return "row_condition"
        bounds = [kwargs.get("min_value"), kwargs.get("max_value")]
        if kind == BETWEEN and not all(_is_number(b) for b in bounds if b is not None):
            return "non-numeric range"
        mostly = kwargs.get("mostly", 1)
        if mostly is not None and (not _is_number(mostly) or mostly < 1):
            return "mostly < 1"
        return None


Compiled = tuple[Check, VectorCheck | None, str]


def _not_null(kwargs: Mapping[str, Any]) -> Compiled:
    return (lambda value: value is not None), (lambda array: ~np.isnan(array)), "not null"


def _match_regex(kwargs: Mapping[str, Any]) -> Compiled:
    regex = kwargs["regex"]
    pattern = re.compile(regex)
    expected = {NUMBER_REGEX: "a number", r"\S": "non-blank text"}.get(regex, f"matches /{regex}/")
    # the text of every finite int or float ("1e-07") matches the number regex; ±inf as the regex says
    number_rule = regex == NUMBER_REGEX
    infinite_pass = pattern.search(str(math.inf)) is not None and pattern.search(str(-math.inf)) is not None
    vector = (_all_pass if infinite_pass else _finite) if number_rule else None

    def passes(value: Any) -> bool:
        if number_rule and (type(value) is int or (type(value) is float and math.isfinite(value))):
            return True
        return pattern.search(value if isinstance(value, str) else str(value)) is not None

    return passes, vector, expected


def _between(kwargs: Mapping[str, Any]) -> Compiled:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is None and high is None:
        raise ValueError("needs min_value and/or max_value")
    inside_ = _bounds(low, high, kwargs.get("strict_min"), kwargs.get("strict_max"))

    def vector(array: np.ndarray) -> np.ndarray:
        return np.isnan(array) | inside_(array)

    def passes(value: Any) -> bool:  # text that is not a number is the type check's to name
        return type(value) not in _NUMBERS or inside_(value)

    return passes, vector, _range_text(low, high, kwargs)


def _in_set(kwargs: Mapping[str, Any]) -> Compiled:
    members = list(kwargs["value_set"])
    hashable = frozenset(m for m in members if isinstance(m, str | int | float | bool) or m is None)

    def passes(value: Any) -> bool:
        try:
            return value in hashable
        except TypeError:  # a list or object sent as the value
            return value in members

    numbers = np.array([float(m) for m in members if isinstance(m, int | float)], dtype=np.float64)

    def vector(array: np.ndarray) -> np.ndarray:  # as Python compares: 1 == 1.0 == True
        return np.isnan(array) | np.isin(array, numbers)

    shown = members[:SET_SHOWN] + (["..."] if len(members) > SET_SHOWN else [])
    return passes, vector, f"one of {shown}"


def _value_lengths(kwargs: Mapping[str, Any]) -> Compiled:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is None and high is None:
        raise ValueError("needs min_value and/or max_value")
    inside_ = _bounds(low, high, kwargs.get("strict_min"), kwargs.get("strict_max"))
    expected = "length " + _range_text(low, high, kwargs)
    return (lambda value: inside_(len(value if isinstance(value, str) else str(value)))), None, expected


BUILDERS: dict[str, Callable[[Mapping[str, Any]], Compiled]] = {
    NOT_NULL: _not_null,
    MATCH_REGEX: _match_regex,
    BETWEEN: _between,
    IN_SET: _in_set,
    VALUE_LENGTHS: _value_lengths,
}


def _bounds(low: Any, high: Any, strict_min: Any, strict_max: Any) -> Callable[[Any], Any]:
    """`low <= value <= high` (strict where asked, a bound None is open), on a number or an array."""

    def inside_(value: Any) -> Any:
        above = True if low is None else (value > low if strict_min else value >= low)
        below = True if high is None else (value < high if strict_max else value <= high)
        return above & below

    return inside_


def _all_pass(array: np.ndarray) -> np.ndarray:
    return np.ones(array.shape, dtype=bool)


def _finite(array: np.ndarray) -> np.ndarray:
    return ~np.isinf(array)  # NaN is missing: the not-null rule's to judge


def _as_floats(values: list[Any]) -> np.ndarray | None:
    """The values as float64 (None as NaN) when every one is a plain int, float or None; else None."""
    if not set(map(type, values)) <= _PLAIN:
        return None
    try:
        return np.array(values, dtype=np.float64)
    except OverflowError:  # an int beyond float64: judged value by value
        return None


def _range_text(low: Any, high: Any, kwargs: Mapping[str, Any]) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'above' if kwargs.get('strict_min') else 'min'} {low:g}")
    if high is not None:
        parts.append(f"{'below' if kwargs.get('strict_max') else 'max'} {high:g}")
    return ", ".join(parts)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_number_rule(kind: str, kwargs: Mapping[str, Any]) -> bool:
    """As the validate stage decides which columns hold numbers: the number regex or a numeric range."""
    if kind == MATCH_REGEX:
        return kwargs.get("regex") == NUMBER_REGEX
    return kind == BETWEEN


def _severity(item: Mapping[str, Any], where: str) -> str:
    """meta.severity (what the suite file says), else GE's own field, else critical."""
    meta = item.get("meta") if isinstance(item.get("meta"), Mapping) else {}
    value = str(meta.get("severity") or item.get("severity") or CRITICAL).lower()
    if value not in SEVERITIES:
        raise ServingError(f"{where}: severity must be one of {list(SEVERITIES)}, got {value!r}")
    return value


def _counted(types: list[str]) -> str:
    """`a x2, b` in first-seen order."""
    counts: dict[str, int] = {}
    for kind in types:
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{kind} x{n}" if n > 1 else kind for kind, n in counts.items())
