"""Quarantine: rows that break a critical row rule are set aside with their reasons, and the run goes on.

With `validate.on_bad_rows: quarantine`, validate writes the rows it set aside to
reports/validation/quarantine.csv (for people: split, row, reasons, then the row, sensitive values masked)
and their positions to data/quarantine.json (for the stages after validate: `tasks.families.load_split`
drops them). A split whose quarantined share exceeds `validate.max_bad_row_fraction` fails the run
anyway: so many bad rows mean the data, not a few rows, is wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.contract import CRITICAL
from tasks.contract_families import check_item
from tasks.io import atomic_write, write_json
from tasks.masking import mask_frame
from tasks.paths import QUARANTINE_FILE, QUARANTINE_ROWS

log = logging.getLogger("shipyard.validate")

# Rules that judge each row on its own: a failing row can be set aside and the rest still holds.
# Table rules (columns, row count, duplicates, leakage) judge the whole table and always fail the run.
ROW_RULES = frozenset(
    {
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_match_regex",
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
        "expect_column_value_lengths_to_be_between",
    }
)
MAX_BAD_ROWS = "shipyard_max_bad_row_fraction"
META_COLUMNS = ("split", "row", "reasons")

BadRows = dict[str, dict[int, list[str]]]  # split -> row position -> reasons


def share(count: int, total: int) -> float:
    return count / total if total else 0.0


def cap_checks(bad: BadRows, totals: Mapping[str, int], cap: float) -> dict[str, list[dict[str, Any]]]:
    """Per split, a critical check that the quarantined share stays within `validate.max_bad_row_fraction`."""
    checks: dict[str, list[dict[str, Any]]] = {}
    for name, total in totals.items():
        count = len(bad.get(name, {}))
        fraction = share(count, total)
        item = check_item(
            MAX_BAD_ROWS, None, CRITICAL, f"max {percent(cap)} of rows quarantined", fraction <= cap
        )
        item.update(observed_value=fraction, unexpected_count=count)
        if fraction > cap:
            item["message"] = (
                f"{count} of {total} rows ({fraction:.1%}) break critical row rules, above "
                f"validate.max_bad_row_fraction ({percent(cap)}): not quarantined, see {QUARANTINE_ROWS}"
            )
        checks[name] = [item]
    return checks


def percent(fraction: float) -> str:
    """0.05 -> '5%', 0.001 -> '0.1%'."""
    return f"{fraction * 100:.4g}%"


def summary(bad: BadRows, totals: Mapping[str, int], policy: str, cap: float) -> dict[str, Any]:
    """The quarantine section of results.json."""
    rows = {name: len(bad.get(name, {})) for name in totals}
    return {
        "policy": policy,
        "max_bad_row_fraction": cap,
        "rows": rows,
        "of": dict(totals),
        "file": str(QUARANTINE_ROWS) if any(rows.values()) else None,
    }


def write(
    bad: BadRows,
    frames: Mapping[str, pd.DataFrame],
    sensitive: Collection[str],
    rows_path: Path = QUARANTINE_ROWS,
    positions_path: Path = QUARANTINE_FILE,
) -> None:
    """Write the positions (always, empty lists when none) and the rows with reasons (only when any)."""
    write_json(positions_path, {name: sorted(bad.get(name, {})) for name in frames})
    table = rows_table(bad, frames, sensitive)
    if table.empty:
        rows_path.unlink(missing_ok=True)  # no stale file from an earlier run
        return
    atomic_write(rows_path, lambda tmp: table.to_csv(tmp, index=False))


def rows_table(bad: BadRows, frames: Mapping[str, pd.DataFrame], sensitive: Collection[str]) -> pd.DataFrame:
    """split, row, reasons, then the row's values (sensitive ones masked), in split and row order."""
    parts = []
    for name, frame in frames.items():
        positions = sorted(bad.get(name, {}))
        if not positions:
            continue
        rows = mask_frame(frame.iloc[positions].reset_index(drop=True), sensitive)
        meta = pd.DataFrame(
            {
                "split": name,
                "row": positions,
                "reasons": ["; ".join(dict.fromkeys(bad[name][p])) for p in positions],
            }
        )
        parts.append((meta, rows))
    if not parts:
        return pd.DataFrame(columns=list(META_COLUMNS))
    meta = pd.concat([m for m, _ in parts], ignore_index=True)
    rows = pd.concat([r for _, r in parts], ignore_index=True)
    for index, column in enumerate(META_COLUMNS):  # a data column may share a name: both are kept
        rows.insert(index, column, meta[column], allow_duplicates=True)
    return rows


def log_quarantine(bad: BadRows, totals: Mapping[str, int]) -> None:
    for name, total in totals.items():
        count = len(bad.get(name, {}))
        if count:
            log.info(
                "quarantined %d of %d rows of %s (%.1f%%) → %s",
                count,
                total,
                name,
                100 * share(count, total),
                QUARANTINE_ROWS,
            )
