"""contract check: validate a data file against a suite in chunks, with bounded memory.

Sources: a CSV/TSV file (read `chunk_rows` rows at a time; the delimiter sniffed from the head as ingest
does; UTF-8, a BOM tolerated), a Parquet file, or a Parquet dataset directory (every file in it is one
dataset). Great Expectations validates each chunk (`tasks.validate.validate_frames`); per expectation the
counts are summed over the chunks and success is recomputed from the totals with the expectation's
`mostly`, so the report reads as if GE had seen the whole file at once. What no chunk can decide alone is
ours, over the whole file: the row count from the total, the column set from the first chunk (every chunk
has the same columns), duplicate rows from one 64-bit hash per row (`pd.util.hash_pandas_object`) counted
at the end, distinct-value counts ("not constant") from at most a few values kept per column.

Memory bound: proportional to chunk_rows x the in-memory width of a row, not to the file: the process
(Python, pandas, GE: about 260 MiB), plus about ten times one chunk as pandas holds it (the chunk, GE's
working copies of it, allocator slack), plus 8 bytes per row of the file for each uniqueness rule (the
hashes; 16 for a moment while they are joined at the end), plus a few examples per expectation. Only the
hashes grow with the file. Measured (bench/validation.py): 30 columns, 200,000 rows per chunk (47 MiB in
pandas): 640 MiB peak RSS; 100,000 rows: 510 MiB, flat from the fifth chunk on.

An expectation that cannot be merged over chunks (a mean, a quantile) is judged per chunk: it passes when
every chunk passes, and its item says so.
"""

from __future__ import annotations

import argparse
import codecs
import csv
import sys
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tasks.config import PARAMS_FILE, Params, load_params
from tasks.contract import (
    infer_suite,
    json_value,
    load_suite,
    numeric_columns,
    severity_of,
    suite_to_dict,
)
from tasks.errors import ShipyardError, report_errors
from tasks.features import category_key
from tasks.ingest import clean_column_names
from tasks.io import write_json, write_text

if TYPE_CHECKING:
    import great_expectations as gx

MEMORY_BOUND = (
    "about 260 MiB (Python, pandas, GE) + about 10 x one chunk in pandas (chunk_rows x row width: the chunk, "
    "GE's working copies, allocator slack) + 8 bytes per row of the file per uniqueness rule (hashes)"
)
DEFAULT_SUITE = Path("contract/suite.json")
DEFAULT_RESULTS = Path("reports/contract/results.json")
HEAD_BYTES = 64 * 1024
EXAMPLES_KEPT = 5
MAX_KEPT_VALUES = 10_000  # distinct values kept for a unique-value-count rule; above: judged per chunk
COUNTS = ("element_count", "missing_count", "unexpected_count")

FIRST_CHUNK = {  # the column layout: every chunk has the first one's
    "expect_table_columns_to_match_set",
    "expect_table_columns_to_match_ordered_list",
    "expect_table_column_count_to_equal",
    "expect_table_column_count_to_be_between",
    "expect_column_to_exist",
}
ROW_COUNT = {"expect_table_row_count_to_be_between", "expect_table_row_count_to_equal"}
DISTINCT = "expect_column_unique_value_count_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"


# ---- reading -------------------------------------------------------------------------------------------


def data_format(path: Path) -> str:
    """csv, tsv or parquet (a directory is a Parquet dataset), as ingest detects it."""
    from tasks.ingest import detect_format

    if not path.exists():
        raise ShipyardError(f"{path}: file not found")
    fmt = detect_format(str(path))
    if fmt == "sql":
        raise ShipyardError(f"{path}: a SQLite database; export the table to CSV or Parquet to check it")
    return fmt


def iter_chunks(path: str | Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The file as frames of at most `chunk_rows` rows (at least one frame, maybe empty: header only)."""
    path = Path(path)
    fmt = data_format(path)
    chunks = _parquet_chunks(path, chunk_rows) if fmt == "parquet" else _csv_chunks(path, fmt, chunk_rows)
    for chunk in chunks:
        yield clean_column_names(chunk, path)
        del chunk  # let the caller's copy be the last one before the next chunk is read


def read_table(path: str | Path) -> pd.DataFrame:
    """The whole file as one frame (inference needs every row; pandas infers dtypes over the whole file)."""
    path = Path(path)
    fmt = data_format(path)
    if fmt == "parquet":
        frame = pd.concat(list(_parquet_chunks(path, 1 << 62)), ignore_index=True)
    else:
        frame = next(_csv_chunks(path, fmt, None))
    return clean_column_names(frame, path)


def _head_text(path: Path) -> str:
    """The file's first bytes as text (BOM dropped); not UTF-8 is an error naming the file."""
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as err:
        raise ShipyardError(f"{path}: not UTF-8 text (byte {err.start}): re-encode it as UTF-8") from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise ShipyardError(f"{path}: the file is empty")
    return text


def _csv_options(path: Path, fmt: str) -> dict[str, Any]:
    """Delimiter (sniffed unless TSV) and quoting: TSV fields are literal when the head parses that way."""
    from tasks.ingest import sniff_delimiter
    from tasks.texts import fields_match_header

    text = _head_text(path)
    if fmt != "tsv":
        return {"sep": sniff_delimiter(text)}
    head = text[: text.rfind("\n") + 1] or text  # whole lines only: the last one may be cut short
    literal = fields_match_header(head, "\t")
    return {"sep": "\t", "quoting": csv.QUOTE_NONE if literal else csv.QUOTE_MINIMAL}


def _csv_chunks(path: Path, fmt: str, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    """CSV/TSV in chunks (None: whole); read errors become one line naming the file."""
    options = _csv_options(path, fmt)
    kind = fmt.upper()
    try:
        reader = pd.read_csv(path, encoding="utf-8-sig", chunksize=chunk_rows, **options)
        if chunk_rows is None:
            yield reader
            return
        empty = True
        with reader:
            for chunk in reader:
                empty = False
                yield chunk
                del chunk
        if empty:  # header only: one empty chunk, so that the column rules still apply
            yield pd.read_csv(path, encoding="utf-8-sig", nrows=0, **options)
    except UnicodeDecodeError as err:
        raise ShipyardError(
            f"{path}: not UTF-8 text (byte {err.start} of a block): re-encode it as UTF-8"
        ) from None
    except pd.errors.EmptyDataError:
        raise ShipyardError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, ValueError, OSError) as err:
        raise ShipyardError(f"{path}: cannot read as {kind}: {str(err).strip().splitlines()[-1]}") from None


def _parquet_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """A Parquet file or dataset directory in frames of `chunk_rows` rows (the last one shorter)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    try:
        dataset = ds.dataset(path, format="parquet")
        if isinstance(dataset, ds.FileSystemDataset) and not dataset.files:
            raise ShipyardError(f"{path}: no Parquet files in this directory")
        batches = dataset.to_batches(
            batch_size=min(chunk_rows, 1 << 20), batch_readahead=1, fragment_readahead=1
        )
        pending, yielded = pa.Table.from_batches([], schema=dataset.schema), False
        for batch in batches:  # joined and sliced without copies: a chunk spans files as needed
            pending = pa.concat_tables([pending, pa.Table.from_batches([batch], schema=dataset.schema)])
            while pending.num_rows >= chunk_rows:
                yield pending.slice(0, chunk_rows).to_pandas()
                pending, yielded = pending.slice(chunk_rows), True
        if pending.num_rows or not yielded:
            yield pending.to_pandas()
    except ShipyardError:
        raise
    except (pa.ArrowException, OSError, ValueError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ShipyardError(f"{path}: cannot read as Parquet: {message}") from None


def harmonize(chunk: pd.DataFrame, suite: gx.ExpectationSuite) -> pd.DataFrame:
    """Read value sets' columns the way their values are typed, whatever dtype this chunk's rows gave.

    pandas infers dtypes per chunk: a column of codes ("7", "x") reads as ints in a chunk without an "x".
    Against a set of strings, numbers become their text (`features.category_key`, as training keys
    categories); against a set of numbers, text that parses as a number becomes that number.
    """
    out = chunk
    for expectation in suite.expectations:
        config = expectation.configuration
        column = config.kwargs.get("column")
        values = config.kwargs.get("value_set")
        if config.type != IN_SET or column not in chunk.columns or not isinstance(values, list) or not values:
            continue
        series = chunk[column]
        converted = _as_values_typed(series, values)
        if converted is not series:
            out = out.copy() if out is chunk else out
            out[column] = converted
    return out


def _as_values_typed(series: pd.Series, values: list[Any]) -> pd.Series:
    numeric = pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)
    if all(isinstance(v, str) for v in values) and numeric:
        return series.map(category_key).astype(object)
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if numbers and not numeric and not pd.api.types.is_bool_dtype(series.dtype):
        raw = series.astype(object)
        parsed = pd.to_numeric(raw, errors="coerce")
        return raw.where(parsed.isna(), parsed.astype(object))
    return series


# ---- whole-file rules ----------------------------------------------------------------------------------


@dataclass
class UniqueRows:
    """Duplicate rows (or values) over the whole file, from one 64-bit hash per row kept."""

    columns: list[str]
    ignore: str = "all_values_are_missing"  # GE's ignore_row_if for compound columns
    hashes: list[np.ndarray] = field(default_factory=list)
    rows: int = 0
    ignored: int = 0
    missing: list[str] = field(default_factory=list)

    def add(self, chunk: pd.DataFrame) -> None:
        self.rows += len(chunk)
        absent = [c for c in self.columns if c not in chunk.columns]
        if absent:
            self.missing = self.missing or absent
            return
        part = chunk[self.columns]
        nulls = part.isna()
        if self.ignore == "any_value_is_missing":
            skip = nulls.any(axis=1)
        elif self.ignore == "never":
            skip = pd.Series(False, index=part.index)
        else:
            skip = nulls.all(axis=1)
        kept = part[~skip.to_numpy()] if skip.any() else part  # no copy in the usual case
        self.ignored += len(part) - len(kept)
        if len(kept):
            self.hashes.append(pd.util.hash_pandas_object(_hashable(kept), index=False).to_numpy(np.uint64))

    def duplicated(self) -> int:
        """Rows whose hash another row shares (GE counts every member of a duplicate group)."""
        if not self.hashes:
            return 0
        values = np.concatenate(self.hashes)
        self.hashes = []
        values.sort()
        same = values[1:] == values[:-1]
        flags = np.zeros(len(values), dtype=bool)
        flags[1:] |= same
        flags[:-1] |= same
        return int(flags.sum())


def _hashable(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers as float64, so that a column read as ints in one chunk and floats in another hashes alike
    (only int columns are converted: the others are shared, not copied)."""
    numbers = [
        c
        for c, dtype in frame.dtypes.items()
        if pd.api.types.is_numeric_dtype(dtype)
        and not pd.api.types.is_bool_dtype(dtype)
        and dtype != "float64"
    ]
    return frame.astype(dict.fromkeys(numbers, "float64")) if numbers else frame


@dataclass
class DistinctValues:
    """A column's distinct non-null values, kept only up to `needed` (what decides the rule)."""

    column: str
    needed: int
    values: set[Any] = field(default_factory=set)
    missing: bool = False

    def add(self, chunk: pd.DataFrame) -> None:
        if self.column not in chunk.columns:
            self.missing = True
            return
        if len(self.values) >= self.needed:
            return
        for value in pd.unique(chunk[self.column].dropna()):
            self.values.add(_plain_key(value))
            if len(self.values) >= self.needed:
                return


def _plain_key(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


# ---- merging -------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """The suite split into what GE checks per chunk and what is decided over the whole file."""

    suite: Any
    per_chunk: list[int]  # indexes into suite.expectations
    first_chunk: list[int]
    unique_rows: dict[int, UniqueRows]
    distinct: dict[int, DistinctValues]

    @classmethod
    def of(cls, suite: gx.ExpectationSuite) -> Plan:
        per_chunk, first, unique_rows, distinct = [], [], {}, {}
        for index, expectation in enumerate(suite.expectations):
            config = expectation.configuration
            kwargs = config.kwargs
            if config.type in FIRST_CHUNK:
                first.append(index)
            elif config.type == "expect_compound_columns_to_be_unique":
                columns = [str(c) for c in kwargs.get("column_list") or []]
                ignore = kwargs.get("ignore_row_if") or "all_values_are_missing"
                unique_rows[index] = UniqueRows(columns, ignore)
            elif config.type == "expect_column_values_to_be_unique":
                unique_rows[index] = UniqueRows([str(kwargs["column"])], "any_value_is_missing")
            elif config.type == DISTINCT and _distinct_needed(kwargs) <= MAX_KEPT_VALUES:
                distinct[index] = DistinctValues(str(kwargs["column"]), _distinct_needed(kwargs))
            elif config.type not in ROW_COUNT:
                per_chunk.append(index)
        return cls(suite, per_chunk, first, unique_rows, distinct)

    def chunk_suite(self, first: bool) -> tuple[gx.ExpectationSuite, list[int]]:
        """The suite GE runs on a chunk, and the index in the whole suite of each of its expectations."""
        import great_expectations as gx

        chosen = sorted(self.per_chunk + (self.first_chunk if first else []))
        configs = [self.suite.expectations[i].configuration for i in chosen]
        suite = gx.ExpectationSuite(
            name=self.suite.name,
            expectations=[c.to_domain_obj() for c in configs],
            meta=dict(self.suite.meta or {}),
        )
        return suite, chosen


def _distinct_needed(kwargs: Mapping[str, Any]) -> int:
    """How many distinct values decide the rule: max + 1 (to see it exceeded), else min."""
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if high is not None:
        return int(high) + 1
    return max(1, int(low or 0))


def merge_items(total: dict[str, Any] | None, item: dict[str, Any]) -> dict[str, Any]:
    """Two chunks' results of one expectation: counts summed, examples kept, the first error kept."""
    if total is None:
        out = dict(item)
        out["chunks_failed"] = int(not item["success"])
        return out
    out = total
    out["chunks_failed"] += int(not item["success"])
    for key in COUNTS:
        if key in item:
            out[key] = out.get(key, 0) + item[key]
    examples = out.get("unexpected_values")
    if examples is not None and len(examples) < EXAMPLES_KEPT:
        out["unexpected_values"] = (
            examples + list(item.get("unexpected_values") or [])[: EXAMPLES_KEPT - len(examples)]
        )
    if item.get("error") and not out.get("error"):
        out["error"] = item["error"]
    if not item["success"] and out["success"] and "unexpected_count" not in item:
        out.update({k: v for k, v in item.items() if k in ("success", "observed_value", "details")})
    return out  # an aggregate rule shows what its first failing chunk observed


def finish_item(item: dict[str, Any], config: Any, chunks: int) -> dict[str, Any]:
    """Success and shares from the totals, as GE computes them for a map expectation over all rows.

    `chunks`: how many chunks an aggregate rule (no counts to sum) was checked in, each on its own.
    """
    out = {k: v for k, v in item.items() if k != "chunks_failed"}
    if out.get("error"):
        out["success"] = False
        for key in (*COUNTS, "unexpected_percent", "unexpected_values"):
            out.pop(key, None)  # some chunks errored: partial counts would mislead
        return out
    if "unexpected_count" not in out or "element_count" not in out:
        out["success"] = item["chunks_failed"] == 0
        if chunks > 1:
            out["note"] = f"not mergeable over chunks: checked in each of {chunks} chunks"
        return out
    considered = out["element_count"] - out.get("missing_count", 0)
    unexpected = out["unexpected_count"]
    mostly = config.kwargs.get("mostly")
    mostly = 1.0 if mostly is None else float(mostly)
    out["success"] = considered == 0 or (considered - unexpected) / considered >= mostly
    out["unexpected_percent"] = unexpected / considered * 100 if considered else None
    return out


def base_item(config: Any) -> dict[str, Any]:
    """An item in the report's format for a rule decided here, not by GE."""
    from tasks.validate import describe

    kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
    item: dict[str, Any] = {
        "type": config.type,
        "column": kwargs.get("column"),
        "severity": severity_of(config),
        "success": True,
        "expected": describe(config.type, kwargs),
    }
    if "column_list" in kwargs:
        item["columns"] = list(kwargs["column_list"])
    return item


def row_count_item(config: Any, rows: int) -> dict[str, Any]:
    kwargs = config.kwargs
    if config.type == "expect_table_row_count_to_equal":
        success = rows == kwargs.get("value")
    else:
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        success = (low is None or rows >= low) and (high is None or rows <= high)
    return {**base_item(config), "success": bool(success), "observed_value": rows}


def unique_rows_item(config: Any, state: UniqueRows) -> dict[str, Any]:
    item = base_item(config)
    if state.missing:
        return {**item, "success": False, "error": f"column(s) {state.missing} not in the data"}
    considered = state.rows - state.ignored
    unexpected = state.duplicated()
    mostly = config.kwargs.get("mostly")
    mostly = 1.0 if mostly is None else float(mostly)
    item.update(
        element_count=state.rows,
        missing_count=state.ignored,
        unexpected_count=unexpected,
        unexpected_percent=unexpected / considered * 100 if considered else None,
        unexpected_values=[],  # rows are not kept, only their hashes
        success=considered == 0 or (considered - unexpected) / considered >= mostly,
    )
    return item


def distinct_item(config: Any, state: DistinctValues) -> dict[str, Any]:
    item = base_item(config)
    if state.missing:
        return {**item, "success": False, "error": f"column '{state.column}' not in the data"}
    count = len(state.values)
    low, high = config.kwargs.get("min_value"), config.kwargs.get("max_value")
    item["success"] = bool((low is None or count >= low) and (high is None or count <= high))
    item["observed_value"] = count
    if count >= state.needed:
        item["details"] = {"observed_at_least": True}  # counting stopped once the rule was decided
    return item


# ---- the check -----------------------------------------------------------------------------------------


def check_file(
    path: str | Path,
    suite: gx.ExpectationSuite,
    chunk_rows: int,
    sensitive: Collection[str] = (),
    progress: Any = None,
) -> dict[str, Any]:
    """Validate a file against the suite chunk by chunk; the report in tasks.validate's format.

    `sensitive` adds to the suite's own sensitive columns: their values are masked everywhere.
    `progress(rows)` is called after each chunk (for a progress display).
    """
    from tasks.masking import mask_item, sensitive_columns
    from tasks.validate import finish_report, split_summary, validate_frames

    if chunk_rows < 1:
        raise ShipyardError(f"chunk_rows must be at least 1, got {chunk_rows}")
    path = Path(path)
    hidden = sensitive_columns(sensitive, suite)
    plan = Plan.of(suite)
    merged: dict[int, dict[str, Any]] = {}
    rows = chunks = 0
    for chunk in iter_chunks(path, chunk_rows):
        chunk = harmonize(chunk.reset_index(drop=True), suite)
        part, chosen = plan.chunk_suite(first=chunks == 0)
        if chosen:
            report = validate_frames({path.name: chunk}, part, docs_dir=None, sensitive=hidden)
            items = report["splits"][path.name]["expectations"]
            for index, item in zip(chosen, items, strict=True):
                merged[index] = merge_items(merged.get(index), item)
        _add_whole_file(plan, chunk, suite)
        rows += len(chunk)
        chunks += 1
        del chunk  # before the next chunk is read: one chunk in memory at a time
        if progress is not None:
            progress(rows)
    items = _final_items(plan, merged, rows, chunks)
    items = [json_value(mask_item(item, hidden)) for item in items]
    report = finish_report({path.name: split_summary(items, rows)})
    return {
        "success": report["success"],
        "data": str(path),
        "format": data_format(path),
        "rows": rows,
        "chunks": chunks,
        "chunk_rows": chunk_rows,
        "memory_bound": MEMORY_BOUND,
        "suite": {"name": suite.name, "expectations": len(suite.expectations)},
        "sensitive_columns": sorted(hidden),
        **{k: v for k, v in report.items() if k != "success"},
    }


def _add_whole_file(plan: Plan, chunk: pd.DataFrame, suite: gx.ExpectationSuite) -> None:
    if plan.unique_rows:
        prepared = _prepared(chunk, suite)
        for state in plan.unique_rows.values():
            state.add(prepared)
    for state in plan.distinct.values():
        state.add(chunk)


def _prepared(chunk: pd.DataFrame, suite: gx.ExpectationSuite) -> pd.DataFrame:
    """The chunk as GE sees it (numbers in numeric columns parsed), so duplicates match GE's."""
    from tasks.validate import prepare_frame

    return prepare_frame(chunk, numeric_columns(suite))


def _final_items(plan: Plan, merged: Mapping[int, dict[str, Any]], rows: int, chunks: int) -> list[dict]:
    items = []
    for index, expectation in enumerate(plan.suite.expectations):
        config = expectation.configuration
        if index in plan.unique_rows:
            items.append(unique_rows_item(config, plan.unique_rows[index]))
        elif index in plan.distinct:
            items.append(distinct_item(config, plan.distinct[index]))
        elif config.type in ROW_COUNT:
            items.append(row_count_item(config, rows))
        elif index in merged:
            items.append(finish_item(merged[index], config, 1 if index in plan.first_chunk else chunks))
    return items


def summary_rows(report: Mapping[str, Any]) -> list[dict[str, str]]:
    """One row per failed or warned expectation (column, rule, severity, count, examples) for display;
    failures another one already explains (a missing column's other rules) are left out, as in the report."""
    from tasks.validate import unexplained_failures

    return [
        _summary_row(item)
        for summary in report["splits"].values()
        for item in unexplained_failures(summary["expectations"])
    ]


def _summary_row(item: Mapping[str, Any]) -> dict[str, str]:
    from tasks.validate import clip

    column = item.get("column")
    if column is None and item.get("columns"):
        column = f"{len(item['columns'])} columns"
    rule = item["type"].removeprefix("expect_") + (f" ({item['expected']})" if item.get("expected") else "")
    if item.get("error"):
        count, examples = "error", clip(str(item["error"]), 160)
    elif "unexpected_count" in item:
        count = f"{item['unexpected_count']:,}"
        percent = item.get("unexpected_percent")
        count += f" ({percent:.2f}%)" if isinstance(percent, int | float) else ""
        examples = ", ".join(clip(repr(v), 40) for v in (item.get("unexpected_values") or [])[:3])
    else:
        mismatched = (item.get("details") or {}).get("mismatched") or {}
        count = "" if mismatched else f"observed {item.get('observed_value')!r}"
        examples = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in mismatched.items() if v)
    return {
        "column": "" if column is None else str(column),
        "rule": rule,
        "severity": str(item["severity"]),
        "count": count,
        "examples": examples,
    }


# ---- inference -----------------------------------------------------------------------------------------


@dataclass
class Inferred:
    """A suite inferred from a file, and what `contract infer` prints about it."""

    suite: Any
    target: str | None
    text_column: str | None
    rows: int
    kinds: dict[str, str]  # column -> numeric | categorical | text | label
    rules: dict[str, int]  # column -> expectations on it


def infer_file(
    path: str | Path,
    params: Params,
    target: str | None = None,
    text_column: str | None = None,
    sensitive: Collection[str] = (),
) -> Inferred:
    """The suite for a reference file: the label from `target`, else ingest.target when the file has it.

    A table with a column of free text (or `text_column`) gets the text family's suite.
    """
    from tasks.texts import check_text_column, find_text_column

    path = Path(path)
    frame = read_table(path)
    if frame.empty:
        raise ShipyardError(f"{path}: no data rows (header only?): cannot infer a contract from it")
    if target is not None and target not in frame.columns:
        raise ShipyardError(f"{path}: label column '{target}' not found; columns: {list(frame.columns)}")
    if target is None and params.ingest.target in frame.columns:
        target = params.ingest.target
    if text_column is not None:
        check_text_column(frame, text_column, str(path))
    else:
        text_column = find_text_column(frame, target or "")
    if text_column is not None and target is None:
        raise ShipyardError(
            f"{path}: column '{text_column}' holds text; text data needs its label column: give --target"
        )
    suite = infer_suite(
        frame, target, params.validate_params, text_column=text_column, sensitive=sensitive, strict=True
    )
    numeric = numeric_columns(suite)
    kinds = {
        str(c): "label"
        if c == target
        else "text"
        if c == text_column
        else "numeric"
        if c in numeric
        else "categorical"
        for c in frame.columns
    }
    rules = {str(c): 0 for c in frame.columns}
    for expectation in suite.expectations:
        column = expectation.configuration.kwargs.get("column")
        if column in rules:
            rules[column] += 1
    return Inferred(suite, target, text_column, len(frame), kinds, rules)


def write_suite(path: str | Path, suite: gx.ExpectationSuite, force: bool = False) -> str:
    """Write the suite JSON atomically: "written", or "unchanged" when the file already holds it.

    A different existing file is kept unless `force`: it may be a contract someone edited.
    """
    import json

    path = Path(path)
    text = json.dumps(suite_to_dict(suite), indent=2) + "\n"
    if path.exists():
        if path.read_text(encoding="utf-8", errors="replace") == text:
            return "unchanged"
        if not force:
            raise ShipyardError(
                f"{path}: exists and differs from the inferred suite; pass --force to overwrite it, "
                "or --out another path"
            )
    write_text(path, text)
    return "written"


def params_for(path: str | Path | None) -> Params:
    """params.yaml when given or present in the working folder, else the defaults."""
    if path is None:
        return load_params(PARAMS_FILE) if PARAMS_FILE.exists() else Params()
    return load_params(path)


# ---- python -m tasks.contract_check --------------------------------------------------------------------


@report_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.contract_check",
        description=f"Validate a file against a suite in chunks. Memory: {MEMORY_BOUND}.",
    )
    parser.add_argument("--data", required=True, help="CSV, TSV, Parquet file or Parquet dataset directory")
    parser.add_argument("--suite", default=str(DEFAULT_SUITE), help="GE suite JSON")
    parser.add_argument("--chunk-rows", type=int, default=None, help="rows per chunk (validate.chunk_rows)")
    parser.add_argument("--params", default=None, help="params file (default: params.yaml when present)")
    parser.add_argument("--out", default=str(DEFAULT_RESULTS), help="results JSON")
    args = parser.parse_args(argv)
    params = params_for(args.params)
    suite = load_suite(args.suite)
    chunk_rows = args.chunk_rows or params.validate_params.chunk_rows
    report = check_file(args.data, suite, chunk_rows, params.validate_params.sensitive_columns)
    write_json(args.out, report)
    state = "ok" if report["success"] else "FAILED"
    print(
        f"{args.data}: {state}: {report['rows']} rows in {report['chunks']} chunk(s), "
        f"{len(report['failures'])} critical failure(s), {len(report['warnings'])} warning(s); "
        f"results in {args.out}"
    )
    for line in report["failures"]:
        print(f"  {line}", file=sys.stderr)
    if not report["success"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
