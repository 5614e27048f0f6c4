"""validate: check every split against the data contract with Great Expectations before anything trains.

The suite comes from `validate.contract` in params.yaml, else from the suite file at `validate.suite`,
else it is inferred from the training split (and written out for the user to own), by task family
(tabular, image or text, as `data/ingest.json` records). Every split is validated; for image and text,
shipyard also checks rows per training class and items shared across splits (leakage), which GE cannot
express. Results go to JSON and to GE Data Docs. A failed critical expectation stops the run with one
line naming the split, the column, the expectation and a few offending values; warnings are only logged.
Only reports/validation is written. Great Expectations is imported inside the functions that use it.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tasks.config import Params, ValidateParams
from tasks.contract import (
    NUMBER_REGEX,
    WARNING,
    build_suite,
    infer_contract,
    json_value,
    load_suite,
    numeric_columns,
    severity_of,
    suite_to_dict,
)
from tasks.contract_families import NON_BLANK_REGEX, Task, family_checks, infer_family_suite, task_from_ingest
from tasks.errors import ShipyardError, stage_main
from tasks.io import read_json, write_json
from tasks.paths import DATA_DOCS_DIR, INFERRED_SUITE, INGEST_REPORT, SPLITS, VALIDATION_RESULTS, split_path

if TYPE_CHECKING:
    import great_expectations as gx

log = logging.getLogger("shipyard.validate")

RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 10}
EXAMPLES_KEPT = 5  # unexpected values kept per expectation in results.json
EXAMPLES_SHOWN = 3  # ... and shown in the one-line error
FAILURES_SHOWN = 5
SUITE_COPY_HINT = "contract/suite.json"

TABLE_COLUMNS = "expect_table_columns_to_match_set"
NOT_NULL = "expect_column_values_to_not_be_null"
MATCH_REGEX = "expect_column_values_to_match_regex"
BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
ROW_COUNT = "expect_table_row_count_to_be_between"
COMPOUND_UNIQUE = "expect_compound_columns_to_be_unique"
UNIQUE = "expect_column_values_to_be_unique"
VALUE_LENGTHS = "expect_column_value_lengths_to_be_between"
NUMBERS = "numbers"  # how the number type check is described
NON_BLANK = "non-blank text"
INFERRED = "inferred from the training split"
TABULAR = Task()


def read_splits() -> dict[str, pd.DataFrame]:
    """The three splits ingest wrote, in pipeline order."""
    frames = {}
    for name in SPLITS:
        path = split_path(name)
        if not path.exists():
            raise ShipyardError(f"{path}: split not found; run the ingest stage first")
        try:
            frames[name] = pd.read_parquet(path)
        except Exception as err:  # pyarrow raises several error types for a bad file
            raise ShipyardError(f"{path}: cannot read the split: {err}".replace("\n", " ")) from None
    return frames


def read_task(path: Path = INGEST_REPORT) -> Task:
    """The task family ingest recorded; no ingest report (or one from before families) means tabular."""
    if not path.exists():
        return TABULAR
    try:
        info = read_json(path)
    except (OSError, ValueError) as err:
        raise ShipyardError(
            f"{path}: cannot read the ingest report: {err}; run the ingest stage again"
        ) from None
    return task_from_ingest(info, str(path))


def resolve_suite(
    params: ValidateParams, train: pd.DataFrame, target: str, task: Task = TABULAR
) -> tuple[gx.ExpectationSuite, str]:
    """The suite to validate with, and where it came from: params contract > suite file > inferred."""
    if params.contract is not None:
        if params.suite:
            log.warning(
                "validate.suite (%s) ignored: validate.contract in params.yaml takes precedence", params.suite
            )
        return build_suite(params.contract, target), "validate.contract in params.yaml"
    if params.suite:
        return load_suite(params.suite), f"suite file {params.suite}"
    if task.family != "tabular":
        return infer_family_suite(train, target, task, params), INFERRED
    contract = infer_contract(train, target, params)
    return build_suite(contract, target, range_severity=WARNING), INFERRED


def prepare_frame(frame: pd.DataFrame, numeric: set[str]) -> pd.DataFrame:
    """Parse text in numeric columns as training will (pd.to_numeric), keeping what fails to parse raw.

    Range checks then compare numbers, while the number type check still sees the offending raw text.
    Blank text counts as missing, as in `features.to_numeric`.
    """
    out = frame
    for column in numeric:
        if column not in frame.columns:
            continue
        series = frame[column]
        if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            continue
        raw = series.astype(object)
        blank = raw.map(lambda v: isinstance(v, str) and not v.strip()).astype(bool)
        parsed = pd.to_numeric(raw.where(~blank), errors="coerce")
        converted = raw.where(parsed.isna(), parsed.astype(object))
        converted[blank] = None
        if out is frame:
            out = frame.copy()
        out[column] = converted
    return out


def validate_frames(
    frames: Mapping[str, pd.DataFrame], suite: gx.ExpectationSuite, docs_dir: Path | None = None
) -> dict[str, Any]:
    """Validate each frame with the suite; build Data Docs into docs_dir when given. Returns the report."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    staging = None
    if docs_dir is not None:
        staging = docs_dir.parent / f".{docs_dir.name}-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="great_expectations")
            context = _context(staging)
            configs = [e.configuration for e in suite.expectations]
            fresh = gx.ExpectationSuite(
                name=suite.name,
                expectations=[
                    ExpectationConfiguration(
                        type=c.type,
                        kwargs=dict(c.kwargs),
                        meta=dict(c.meta or {}),
                        notes=c.notes,
                        severity=c.severity,
                    )
                    for c in configs
                ],
                meta=dict(suite.meta or {}),
                notes=suite.notes,
            )
            fresh = context.suites.add(fresh)
            order = {e.id: i for i, e in enumerate(fresh.expectations)}
            numeric = numeric_columns(fresh)
            source = context.data_sources.add_pandas("shipyard")
            run_time = datetime.now(UTC)
            splits = {}
            for name, frame in frames.items():
                batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
                definition = context.validation_definitions.add(
                    gx.ValidationDefinition(name=name, data=batch, suite=fresh)
                )
                result = definition.run(
                    batch_parameters={"dataframe": prepare_frame(frame, numeric)},
                    result_format=RESULT_FORMAT,
                    run_id=RunIdentifier(run_name=name, run_time=run_time),
                )
                splits[name] = _summarize(result, order, len(frame))
            if staging is not None and docs_dir is not None:
                context.build_data_docs()
                _replace_dir(staging, docs_dir)
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return finish_report(splits)


def finish_report(splits: Mapping[str, Any]) -> dict[str, Any]:
    """The report over split summaries: critical failures, warnings, success."""
    report: dict[str, Any] = {"splits": dict(splits)}
    report["failures"] = failure_lines(report, critical=True)
    report["warnings"] = failure_lines(report, critical=False)
    report["success"] = not report["failures"]
    return report


def add_checks(report: Mapping[str, Any], checks: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The report with shipyard's own check results appended to each split's expectations."""
    splits = {
        name: split_summary(summary["expectations"] + checks.get(name, []), summary["rows"])
        for name, summary in report["splits"].items()
    }
    return finish_report(splits)


def _context(docs_root: Path | None) -> Any:
    """An in-memory GE context: no gx/ folder, no analytics, no progress bars; one local docs site."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = {}
    if docs_root is not None:
        sites["shipyard"] = {
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_root.resolve()),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _replace_dir(new: Path, dest: Path) -> None:
    """Swap a finished folder into place; readers see the old or the new docs, never a half-built site."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}-old-{uuid.uuid4().hex[:8]}")
        os.replace(dest, old)
    os.replace(new, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _summarize(result: Any, order: Mapping[Any, int], rows: int) -> dict[str, Any]:
    items = sorted(result.results, key=lambda r: order.get(r.expectation_config.id, len(order)))
    return split_summary([_item(r) for r in items], rows)


def split_summary(expectations: list[dict[str, Any]], rows: int) -> dict[str, Any]:
    """A split's counts over its expectation results (GE's and shipyard's)."""
    failed = [e for e in expectations if not e["success"]]
    return {
        "success": not failed,
        "rows": rows,
        "evaluated": len(expectations),
        "failed": len(failed),
        "critical_failed": sum(e["severity"] == "critical" for e in failed),
        "expectations": expectations,
    }


def _item(result: Any) -> dict[str, Any]:
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
    item: dict[str, Any] = {
        "type": config.type,
        "column": kwargs.get("column"),
        "severity": severity_of(config),
        "success": bool(result.success),
        "expected": describe(config.type, kwargs),
    }
    if "column_list" in kwargs:
        item["columns"] = list(kwargs["column_list"])
    outcome = result.result or {}
    for count in ("element_count", "missing_count"):  # kept so that chunk results can be summed
        if outcome.get(count) is not None:
            item[count] = int(outcome[count])
    if "unexpected_count" in outcome:
        item["unexpected_count"] = int(outcome["unexpected_count"] or 0)
        item["unexpected_percent"] = json_value(outcome.get("unexpected_percent"))
        item["unexpected_values"] = json_value(
            list(outcome.get("partial_unexpected_list") or [])[:EXAMPLES_KEPT]
        )
    if "observed_value" in outcome:
        item["observed_value"] = json_value(outcome["observed_value"])
    if outcome.get("details"):
        item["details"] = json_value(outcome["details"])
    error = _error_message(result.exception_info)
    if error:
        item["error"] = error
    return item


def _error_message(info: Any) -> str | None:
    if not info:
        return None
    entries = [info] if "raised_exception" in info else list(info.values())
    messages = [
        e.get("exception_message") for e in entries if isinstance(e, dict) and e.get("raised_exception")
    ]
    messages = list(dict.fromkeys(m for m in messages if m))
    return " | ".join(messages).replace("\n", " ") if messages else None


def describe(kind: str, kwargs: Mapping[str, Any]) -> str:
    """What an expectation asks for, in a few words (for the error line and the report)."""
    if kind in (BETWEEN, ROW_COUNT, VALUE_LENGTHS):
        bounds = [
            f"{k} {_num(kwargs.get(k + '_value'))}"
            for k in ("min", "max")
            if kwargs.get(k + "_value") is not None
        ]
        return ("length " if kind == VALUE_LENGTHS else "") + ", ".join(bounds)
    if kind == NOT_NULL:
        mostly = kwargs.get("mostly")
        return f"max null fraction {1 - mostly:.4g}" if mostly is not None and mostly < 1 else "no nulls"
    if kind in (COMPOUND_UNIQUE, UNIQUE):
        mostly = kwargs.get("mostly")
        return (
            f"max duplicate fraction {1 - mostly:.4g}"
            if mostly is not None and mostly < 1
            else "no duplicates"
        )
    if kind == MATCH_REGEX:
        return _describe_regex(kwargs)
    if kind == IN_SET:
        return f"values in {_short_list(list(kwargs.get('value_set') or []), 8)}"
    if kind == TABLE_COLUMNS:
        return f"{len(kwargs.get('column_set') or [])} columns" + (
            ", exactly" if kwargs.get("exact_match", True) else ""
        )
    skip = {"column", "column_list", "column_set", "batch_id"}
    return ", ".join(f"{k} {_short(v)}" for k, v in kwargs.items() if k not in skip)


def _describe_regex(kwargs: Mapping[str, Any]) -> str:
    regex, mostly = kwargs.get("regex"), kwargs.get("mostly")
    if regex == NUMBER_REGEX:
        return NUMBERS
    if regex != NON_BLANK_REGEX:
        return f"regex {regex!r}"
    return NON_BLANK + (f", max blank fraction {1 - mostly:.4g}" if mostly is not None and mostly < 1 else "")


def failure_lines(report: Mapping[str, Any], critical: bool) -> list[str]:
    """One line per failed expectation of the wanted severity, skipping failures another already explains."""
    lines = []
    for split, summary in report["splits"].items():
        items = summary["expectations"]
        missing = {c for e in items if e["type"] == TABLE_COLUMNS and not e["success"] for c in _missing(e)}
        not_numbers = {
            e["column"]
            for e in items
            if e["type"] == MATCH_REGEX
            and not e["success"]
            and e["expected"] == NUMBERS
            and not e.get("error")
        }
        for item in items:
            if item["success"] or (item["severity"] == "critical") != critical:
                continue
            columns = {item["column"], *item.get("columns", [])} - {None}
            if item.get("error") and (
                columns & missing or (item["type"] == BETWEEN and columns & not_numbers)
            ):
                continue
            lines.append(_line(split, item))
    return lines


def _missing(item: Mapping[str, Any]) -> list[str]:
    mismatched = (item.get("details") or {}).get("mismatched") or {}
    return list(mismatched.get("missing") or [])


def _line(split: str, item: Mapping[str, Any]) -> str:
    where = f"split '{split}'" + (f", column '{item['column']}'" if item.get("column") is not None else "")
    head = f"{where}, {item['type']}" + (f" ({item['expected']})" if item.get("expected") else "")
    if item.get("message"):  # a shipyard check: its own words, without a GE expectation name
        examples = item.get("unexpected_values") or []
        return f"{where}: {item['message']}" + (
            f", e.g. {_short_list(examples, EXAMPLES_SHOWN)}" if examples else ""
        )
    if item.get("error"):
        return f"{head}: error: {_clip(item['error'], 160)}"
    if item["type"] == TABLE_COLUMNS:
        mismatched = (item.get("details") or {}).get("mismatched") or {}
        parts = [
            f"{k} columns {_short_list(mismatched[k], 8)}"
            for k in ("missing", "unexpected")
            if mismatched.get(k)
        ]
        return f"{head}: " + ("; ".join(parts) or f"observed {_short(item.get('observed_value'))}")
    if "unexpected_count" in item:
        count, percent = item["unexpected_count"], item.get("unexpected_percent") or 0.0
        if item["type"] == NOT_NULL:
            return f"{head}: {count} null values ({percent:.1f}%)"
        if item["type"] in (COMPOUND_UNIQUE, UNIQUE):
            return f"{head}: {count} rows duplicated ({percent:.1f}%)"
        if item["expected"].startswith(NON_BLANK):
            return f"{head}: {count} blank values ({percent:.1f}%)"
        examples = _short_list(item.get("unexpected_values") or [], EXAMPLES_SHOWN)
        return f"{head}: {count} unexpected values, e.g. {examples}"
    if item.get("observed_value") is not None:
        return f"{head}: observed {_short(item['observed_value'])}"
    return f"{head}: failed"


def failure_message(report: Mapping[str, Any]) -> str | None:
    """The one-line error for the critical failures (None when there are none)."""
    lines = report["failures"]
    if not lines:
        return None
    shown = "; ".join(_clip(line, 300) for line in lines[:FAILURES_SHOWN])
    more = f"; and {len(lines) - FAILURES_SHOWN} more" if len(lines) > FAILURES_SHOWN else ""
    return f"validation failed: {shown}{more} (see {VALIDATION_RESULTS} and {DATA_DOCS_DIR / 'index.html'})"


def run(params: Params) -> dict[str, Any]:
    """Validate train/val/test; write results, Data Docs and the suite used; raise on a critical failure."""
    frames = read_splits()
    task = read_task()
    target = params.ingest.target
    suite, source = resolve_suite(params.validate_params, frames["train"], target, task)
    report = validate_frames(frames, suite, docs_dir=DATA_DOCS_DIR)
    if task.family != "tabular":
        report = add_checks(report, family_checks(frames, target, task, params.validate_params))
    report = {
        "success": report["success"],
        "task": task.family,
        **({"text_column": task.text_column} if task.text_column else {}),
        "suite": {
            "source": source,
            "name": suite.name,
            "expectations": len(suite.expectations),
            "written_to": str(INFERRED_SUITE),
        },
        **{k: v for k, v in report.items() if k != "success"},
    }
    write_json(INFERRED_SUITE, suite_to_dict(suite))
    write_json(VALIDATION_RESULTS, report)
    if source == INFERRED:
        log.info(
            "inferred suite written to %s: to own it, copy it (e.g. to %s), edit, commit it and set "
            "validate.suite to its path",
            INFERRED_SUITE,
            SUITE_COPY_HINT,
        )
    for line in report["warnings"]:
        log.warning("warning: %s", line)
    summary = ", ".join(_split_summary(name, report) for name in report["splits"])
    log.info("validated %s expectations (%s): %s", len(suite.expectations), source, summary)
    message = failure_message(report)
    if message:
        raise ShipyardError(message)
    return report


def _split_summary(name: str, report: Mapping[str, Any]) -> str:
    summary = report["splits"][name]
    state = "FAILED" if summary["critical_failed"] else "ok"
    warned = sum(line.startswith(f"split '{name}',") for line in report["warnings"])
    return f"{name} {state} ({summary['rows']} rows" + (f", {warned} warnings)" if warned else ")")


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _short(value: Any, limit: int = 60) -> str:
    return _clip(repr(value), limit)


def _short_list(values: list[Any], count: int) -> str:
    shown = ", ".join(_short(v, 40) for v in values[:count])
    return f"[{shown}{', ...' if len(values) > count else ''}]"


def _clip(text: str, limit: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


if __name__ == "__main__":
    stage_main(run)
