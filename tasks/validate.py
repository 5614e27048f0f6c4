"""validate: check every split against the data contract with Great Expectations before anything trains.

The suite comes from `validate.contract` in params.yaml, else from the suite file at `validate.suite`,
else it is inferred from the training split (and written out for the user to own), by task family
(tabular, image or text, as `data/ingest.json` records). Every split is validated; shipyard also checks
what GE cannot express: rows per training class (image, text), target leakage and duplicates in the source
(tabular), items or rows shared across splits. Results go to JSON and to GE Data Docs, with the values of
sensitive columns masked. A failed critical expectation stops the run with one line naming the split, the
column, the expectation and a few offending values; warnings are only logged. With
`validate.on_bad_rows: quarantine`, rows breaking a critical row rule are set aside instead (see
tasks/quarantine.py). Only reports/validation and data/quarantine.json are written. Great Expectations is
imported inside the functions that use it.
"""

from __future__ import annotations

import logging
import numbers
import os
import shutil
import sys
import uuid
import warnings
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tasks import quarantine
from tasks.config import Params, ValidateParams
from tasks.contract import (
    CRITICAL,
    NUMBER_REGEX,
    SETTINGS_KEY,
    WARNING,
    build_suite,
    infer_contract,
    json_value,
    load_suite,
    numeric_columns,
    severity_of,
    suite_settings,
    suite_to_dict,
    use_number_fast_path,
)
from tasks.contract_families import (
    NON_BLANK_REGEX,
    Task,
    family_checks,
    infer_family_suite,
    source_checks,
    task_from_ingest,
)
from tasks.errors import ShipyardError, stage_main
from tasks.io import read_json, write_json
from tasks.masking import mask_item, mask_result, sensitive_columns
from tasks.paths import DATA_DOCS_DIR, INFERRED_SUITE, INGEST_REPORT, SPLITS, VALIDATION_RESULTS, split_path
from tasks.quarantine import ROW_RULES, BadRows, cap_checks, log_quarantine, share

if TYPE_CHECKING:
    import great_expectations as gx

log = logging.getLogger("shipyard.validate")

RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 10}
QUARANTINE_FORMAT = {"result_format": "COMPLETE", "partial_unexpected_count": 10}  # with row positions
MAX_PASSES = 3  # quarantine: validate again without the rows set aside, at most this many times
FULL_LISTS = ("unexpected_list", "unexpected_index_list", "unexpected_index_query")  # COMPLETE only
SOURCE = "source data"  # how failure lines name checks on the source as a whole
SOURCE_CHECKS = "source_checks"  # their key in the report (and in add_checks' checks)
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
NUMBERS = "finite numbers"  # how the number type check is described
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
            frames[name] = pd.read_parquet(path).reset_index(drop=True)  # index = row position
        except Exception as err:  # pyarrow raises several error types for a bad file
            raise ShipyardError(f"{path}: cannot read the split: {err}".replace("\n", " ")) from None
    return frames


def read_ingest(path: Path = INGEST_REPORT) -> Any:
    """The ingest report, or None when there is none (a project from before ingest wrote one)."""
    if not path.exists():
        return None
    try:
        return read_json(path)
    except (OSError, ValueError) as err:
        raise ShipyardError(
            f"{path}: cannot read the ingest report: {err}; run the ingest stage again"
        ) from None


def read_task(path: Path = INGEST_REPORT) -> Task:
    """The task family ingest recorded; no ingest report (or one from before families) means tabular."""
    info = read_ingest(path)
    return TABULAR if info is None else task_from_ingest(info, str(path))


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
    Blank text counts as missing, as in `features.to_numeric`. Columns of an int or float dtype stay as
    they are, and GE checks their number type from the dtype (`contract.use_number_fast_path`).
    """
    if "great_expectations" in sys.modules:  # only where GE validates: serving may share this function
        use_number_fast_path()
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
    frames: Mapping[str, pd.DataFrame],
    suite: gx.ExpectationSuite,
    docs_dir: Path | None = None,
    sensitive: Collection[str] = (),
) -> dict[str, Any]:
    """Validate each frame with the suite; build Data Docs into docs_dir when given. Returns the report."""
    return validate_splits(frames, suite, docs_dir, sensitive=sensitive)[0]


def validate_splits(
    frames: Mapping[str, pd.DataFrame],
    suite: gx.ExpectationSuite,
    docs_dir: Path | None = None,
    *,
    sensitive: Collection[str] = (),
    cap: float | None = None,
) -> tuple[dict[str, Any], BadRows]:
    """Validate each frame (index = row positions); with `cap` (quarantine) set aside the rows that break
    critical row rules. Returns the report and the rows set aside, with their reasons.

    Quarantine validates again without the rows set aside, up to MAX_PASSES times (a type failure can hide
    a range failure: the range check errors on text), so the report and the Data Docs describe the rows
    that go on. When a split's share set aside exceeds `cap`, that pass's report stands, with a failing
    check. Values of `sensitive` columns are masked before anything is summarized or rendered.
    """
    staging = None
    if docs_dir is not None:
        staging = docs_dir.parent / f".{docs_dir.name}-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="great_expectations")
            context = _context(staging)
            fresh = context.suites.add(_fresh_suite(suite))
            runs, bad = _run_passes(context, fresh, frames, cap)
            order = {e.id: i for i, e in enumerate(fresh.expectations)}
            splits = {}
            for name, (result, key, rows) in runs.items():
                _mask_and_trim(result, sensitive)
                if key is not None:  # the Data Docs render the stored results: store the masked ones
                    context.validation_results_store.set(key, result)
                splits[name] = _summarize(result, order, rows)
                if cap is not None:
                    splits[name]["quarantined"] = len(bad[name])
            if staging is not None and docs_dir is not None:
                context.build_data_docs()
                _replace_dir(staging, docs_dir)
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    report = finish_report(splits)
    if cap is not None:
        report = add_checks(report, cap_checks(bad, {n: len(f) for n, f in frames.items()}, cap))
    return report, bad


def _fresh_suite(suite: gx.ExpectationSuite) -> gx.ExpectationSuite:
    """A copy of the suite without ids, so that this run's context can own it."""
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    return gx.ExpectationSuite(
        name=suite.name,
        expectations=[
            ExpectationConfiguration(
                type=c.type,
                kwargs=dict(c.kwargs),
                meta=dict(c.meta or {}),
                notes=c.notes,
                severity=c.severity,
            )
            for c in (e.configuration for e in suite.expectations)
        ],
        meta=dict(suite.meta or {}),
        notes=suite.notes,
    )


def _run_passes(
    context: Any, suite: gx.ExpectationSuite, frames: Mapping[str, pd.DataFrame], cap: float | None
) -> tuple[dict[str, tuple[Any, Any, int]], BadRows]:
    """Per split (GE result, its store key, rows validated), and the rows set aside (none without cap)."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    source = context.data_sources.add_pandas("shipyard")
    definitions = {}
    for name in frames:
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        definitions[name] = context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=suite)
        )
    numeric, store = numeric_columns(suite), context.validation_results_store
    run_time = datetime.now(UTC)
    bad: BadRows = {name: {} for name in frames}
    passes = 1 if cap is None else MAX_PASSES
    for attempt in range(passes):
        for key in store.list_keys():  # the Data Docs show the last pass only
            store.remove_key(key)
        runs = {}
        for name, frame in frames.items():
            kept = frame.drop(index=list(bad[name])) if bad[name] else frame
            before = set(store.list_keys())
            result = definitions[name].run(
                batch_parameters={"dataframe": prepare_frame(kept, numeric)},
                result_format=RESULT_FORMAT if cap is None else QUARANTINE_FORMAT,
                run_id=RunIdentifier(run_name=name, run_time=run_time),
            )
            runs[name] = (result, next(iter(set(store.list_keys()) - before), None), len(kept))
        if cap is None or attempt == passes - 1:
            break
        found = {name: failed_rows(result) for name, (result, _, _) in runs.items()}
        if not any(found.values()):
            break
        for name, rows in found.items():
            for position, reasons in rows.items():
                bad[name].setdefault(position, []).extend(reasons)
        if any(share(len(bad[name]), len(frame)) > cap for name, frame in frames.items()):
            break
    return runs, bad


def failed_rows(result: Any) -> dict[int, list[str]]:
    """Row positions (the frame's index) that break a failed critical row rule, each with its reasons.

    GE 1.x returns the index of every unexpected row with result_format COMPLETE (pandas). A rule that
    raised an error, or whose rows GE cannot list, is left as it is: a failure of the whole table.
    """
    rows: dict[int, list[str]] = {}
    for item in result.results:
        config = item.expectation_config
        if item.success or config.type not in ROW_RULES or severity_of(config) != CRITICAL:
            continue
        positions = (item.result or {}).get("unexpected_index_list")
        if _error_message(item.exception_info) or not positions:
            continue
        if not all(isinstance(p, numbers.Integral) for p in positions):
            continue  # a named index gives dicts: not row positions
        kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
        reason = f"column '{kwargs.get('column')}': {config.type} ({describe(config.type, kwargs)})"
        for position in positions:
            rows.setdefault(int(position), []).append(reason)
    return rows


def _mask_and_trim(result: Any, sensitive: Collection[str]) -> None:
    """Mask sensitive values; drop COMPLETE's full lists (the partial ones are what reports show)."""
    for item in result.results:
        mask_result(item, sensitive)
        if item.result:
            item.result = {k: v for k, v in item.result.items() if k not in FULL_LISTS}


def finish_report(splits: Mapping[str, Any], source: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The report over split summaries (and checks on the source): critical failures, warnings, success."""
    report: dict[str, Any] = {"splits": dict(splits)}
    if source:
        report[SOURCE_CHECKS] = list(source)
    report["failures"] = failure_lines(report, critical=True)
    report["warnings"] = failure_lines(report, critical=False)
    report["success"] = not report["failures"]
    return report


def add_checks(report: Mapping[str, Any], checks: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The report with shipyard's own check results appended to each split's expectations; checks under
    SOURCE_CHECKS concern the source as a whole."""
    splits = {
        name: {**summary, **split_summary(summary["expectations"] + checks.get(name, []), summary["rows"])}
        for name, summary in report["splits"].items()
    }
    return finish_report(splits, [*report.get(SOURCE_CHECKS, []), *checks.get(SOURCE_CHECKS, [])])


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
    if kind == "expect_column_unique_value_count_to_be_between":
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        if low == 2 and high is None:
            return "not constant: at least 2 distinct values"
        bounds = [f"{k} {_num(v)}" for k, v in (("min", low), ("max", high)) if v is not None]
        return "distinct values " + ", ".join(bounds)
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
        lines += _failure_lines(f"split '{split}'", summary["expectations"], critical)
    return lines + _failure_lines(SOURCE, report.get(SOURCE_CHECKS, []), critical)


def _failure_lines(label: str, items: list[dict[str, Any]], critical: bool) -> list[str]:
    return [
        _line(label, item)
        for item in unexplained_failures(items)
        if (item["severity"] == "critical") == critical
    ]


def unexplained_failures(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The failed items, less those another failure explains: rules that errored on a missing column, and
    range checks that errored on a column already failing its number check."""
    missing = {c for e in items if e["type"] == TABLE_COLUMNS and not e["success"] for c in _missing(e)}
    not_numbers = {
        e["column"]
        for e in items
        if e["type"] == MATCH_REGEX and not e["success"] and e["expected"] == NUMBERS and not e.get("error")
    }
    failed = []
    for item in items:
        if item["success"]:
            continue
        columns = {item.get("column"), *item.get("columns", [])} - {None}
        if item.get("error") and (columns & missing or (item["type"] == BETWEEN and columns & not_numbers)):
            continue
        failed.append(item)
    return failed


def _missing(item: Mapping[str, Any]) -> list[str]:
    mismatched = (item.get("details") or {}).get("mismatched") or {}
    return list(mismatched.get("missing") or [])


def _line(label: str, item: Mapping[str, Any]) -> str:
    column = item.get("column")
    named = column is not None and not str(item.get("message") or "").startswith(f"column '{column}'")
    where = label + (f", column '{column}'" if named else "")
    head = f"{where}, {item['type']}" + (f" ({item['expected']})" if item.get("expected") else "")
    if item.get("message"):  # a shipyard check: its own words, without a GE expectation name
        examples = item.get("unexpected_values") or []
        return f"{where}: {item['message']}" + (
            f", e.g. {_short_list(examples, EXAMPLES_SHOWN)}" if examples else ""
        )
    if item.get("error"):
        return f"{head}: error: {clip(item['error'], 160)}"
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
    shown = "; ".join(clip(line, 300) for line in lines[:FAILURES_SHOWN])
    more = f"; and {len(lines) - FAILURES_SHOWN} more" if len(lines) > FAILURES_SHOWN else ""
    return f"validation failed: {shown}{more} (see {VALIDATION_RESULTS} and {DATA_DOCS_DIR / 'index.html'})"


def run(params: Params) -> dict[str, Any]:
    """Validate train/val/test; write results, Data Docs, the suite used and the quarantine; raise on a
    critical failure."""
    settings = params.validate_params
    frames = read_splits()
    info = read_ingest()
    task = TABULAR if info is None else task_from_ingest(info, str(INGEST_REPORT))
    target = params.ingest.target
    suite, source = resolve_suite(settings, frames["train"], target, task)
    sensitive = sensitive_columns(settings.sensitive_columns, suite)
    _warn_unknown(sensitive, frames["train"])
    cap = settings.max_bad_row_fraction if settings.on_bad_rows == "quarantine" else None
    report, bad = validate_splits(frames, suite, DATA_DOCS_DIR, sensitive=sensitive, cap=cap)
    kept = {name: frame.drop(index=list(bad[name])) for name, frame in frames.items()}
    checks = {
        **family_checks(kept, target, task, settings),
        SOURCE_CHECKS: source_checks(info, task, settings),
    }
    report = add_checks(report, {k: [mask_item(i, sensitive) for i in v] for k, v in checks.items()})
    totals = {name: len(frame) for name, frame in frames.items()}
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
        "quarantine": quarantine.summary(bad, totals, settings.on_bad_rows, settings.max_bad_row_fraction),
        **{k: v for k, v in report.items() if k != "success"},
    }
    quarantine.write(bad, frames, sensitive)
    write_json(INFERRED_SUITE, suite_to_dict(with_settings(suite, target, task, sensitive)))
    write_json(VALIDATION_RESULTS, report)
    _log_outcome(report, suite, source)
    message = failure_message(report)
    if message:
        raise ShipyardError(message)
    log_quarantine(bad, totals)
    return report


def with_settings(suite: gx.ExpectationSuite, target: str, task: Task, sensitive: Collection[str]) -> Any:
    """The suite as used, with what serving needs in meta.shipyard: the target, the task and every
    sensitive column (params' too, so that the published contract masks the same columns)."""
    settings = {"target": target, "task": task.family, "text_column": task.text_column}
    settings = {**settings, **suite_settings(suite), "sensitive_columns": sorted(sensitive)}
    suite.meta = {**(suite.meta or {}), SETTINGS_KEY: settings}
    return suite


def _warn_unknown(sensitive: Collection[str], train: pd.DataFrame) -> None:
    unknown = sorted(set(sensitive) - {str(c) for c in train.columns})
    if unknown:
        log.warning("sensitive column(s) %s not in the training split (check the spelling)", unknown)


def _log_outcome(report: Mapping[str, Any], suite: gx.ExpectationSuite, source: str) -> None:
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


def _split_summary(name: str, report: Mapping[str, Any]) -> str:
    summary = report["splits"][name]
    state = "FAILED" if summary["critical_failed"] else "ok"
    warned = sum(line.startswith((f"split '{name}',", f"split '{name}':")) for line in report["warnings"])
    parts = [f"{summary['rows']} rows"]
    parts += [f"{summary['quarantined']} quarantined"] if summary.get("quarantined") else []
    parts += [f"{warned} warnings"] if warned else []
    return f"{name} {state} ({', '.join(parts)})"


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _short(value: Any, limit: int = 60) -> str:
    return clip(repr(value), limit)


def _short_list(values: list[Any], count: int) -> str:
    shown = ", ".join(_short(v, 40) for v in values[:count])
    return f"[{shown}{', ...' if len(values) > count else ''}]"


def clip(text: str, limit: int) -> str:
    """One line of at most `limit` characters."""
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


if __name__ == "__main__":
    stage_main(run)
