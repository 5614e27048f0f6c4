"""Helpers shared by the benchmarks: statistics, goal checks, tables and JSON results.

Standard library only (rich is used when installed): the GPU machines lack most of the project's
dependencies, and bench/onnx_vs_torch.py must still run there.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

RESULTS_DIR = Path(__file__).resolve().parent / "results"

T = TypeVar("T")


def median(values: Sequence[float]) -> float:
    """The median of repeated measurements (robust to the odd slow repeat)."""
    if not values:
        raise ValueError("median of no measurements")
    return float(statistics.median(values))


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, or None when the denominator is zero."""
    return numerator / denominator if denominator else None


def share(part: float, whole: float) -> float | None:
    """part as a fraction of whole (0.1 = 10%), or None when whole is zero."""
    return ratio(part, whole)


def meets(value: float | None, limit: float) -> bool | None:
    """Whether a lower-is-better figure is within its goal; None when it was not measured."""
    return None if value is None else value <= limit


def verdict(ok: bool | None) -> str:
    return {True: "pass", False: "FAIL", None: "n/a"}[ok]


def format_seconds(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.2f} s"


def format_percent(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{fraction:.1%}"


def format_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def format_load(load: Sequence[float] | None) -> str:
    return "n/a" if not load else ", ".join(f"{x:.2f}" for x in load)


def render_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table (used when rich is not installed, and in tests)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([title, line(headers), rule, *(line(row) for row in rows)])


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a table with rich when available, else as plain text."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(render_table(title, headers, rows))
        return
    table = Table(title=title, title_justify="left")
    for header in headers:
        table.add_column(header)
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)  # logs and pipes: keep rows on one line
    console.print(table)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """A rich progress bar over items when rich is installed; the bare items otherwise."""
    try:
        from rich.progress import track as rich_track
    except ImportError:
        yield from items
        return
    quiet = not sys.stdout.isatty()  # no bar residue in logs and pipes
    yield from rich_track(items, description=description, total=total, transient=True, disable=quiet)


def machine_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,  # others' load skews
    }


def timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_results(name: str, payload: dict[str, Any], folder: Path = RESULTS_DIR) -> Path:
    """Write <folder>/<name>.json atomically (tasks.io when importable, else temp file + os.replace)."""
    path = folder / f"{name}.json"
    try:
        from tasks.io import write_json
    except ImportError:
        return _write_json_atomic(path, payload)
    return write_json(path, payload)


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
