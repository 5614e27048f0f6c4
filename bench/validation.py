"""Validation at scale: GE against hand-written pandas checks of the same rules, drift, the chunked path.

    python -m bench.validation [--rows 1000000] [--big-gb 0.2] [--repeats 3] [--chunk-rows N]

(a) A synthetic table (26 numeric columns, 3 categorical, a label: 30 columns) and the default suite the
    pipeline infers from it (tasks.contract.infer_suite, ranges as warnings). Great Expectations
    (tasks.validate.validate_frames, the pipeline's path, no Data Docs) against plain pandas computing
    exactly the same rules with the same results (the bench checks that every count agrees), timed side by
    side in alternating repeats; the median, rows/s, a breakdown per expectation type, and the peak RSS
    of each side in a fresh subprocess (over a baseline that only loads the data and the suite).
(b) Drift (tasks.drift: profile the table, compare a copy with one column scaled 10x), when present.
(c) The chunked path: a CSV larger than the memory bound (--big-gb), checked by `python -m
    tasks.contract_check` in a subprocess; its peak RSS (RUSAGE_CHILDREN, read by a wrapper process whose
    only child is the check) against the file size, and rows/s.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    RESULTS_DIR,
    format_load,
    format_ratio,
    machine_info,
    median,
    meets,
    print_table,
    ratio,
    timestamp,
    verdict,
    write_results,
)

NAME = "validation"
ROOT = Path(__file__).resolve().parents[1]
GOAL_RATIO = 3.0  # GE / pandas wall time
TARGET = "label"
SEED = 0
FLOATS, INTS, CATEGORIES = 22, 4, 3  # + the label: 30 columns
SHIFTED = "f03"  # drift: this column x10
ROWS_PER_WRITE = (1_000, 100_000)  # (c): rows generated per write, about a tenth of the file (bounded)
CSV_ROW_BYTES = 250  # (c): about what a row of make_table takes as CSV text
CHILD_RSS = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.validation", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the table in (a) and (b)")
    parser.add_argument("--big-gb", type=float, default=0.2, help="size of the CSV in (c), in GB")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per side")
    parser.add_argument(
        "--chunk-rows", type=int, default=None, help="(c): rows per chunk (validate.chunk_rows)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / f"{NAME}.json", help="results JSON")
    parser.add_argument("--child", choices=["data", "ge", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---- data and suite ------------------------------------------------------------------------------------


def make_table(rows: int, seed: int = SEED) -> Any:
    """Floats of several scales (1% missing in a few), small ints, few-valued categories, a binary label."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for i in range(FLOATS):
        values = rng.normal(loc=i, scale=10.0 ** (i % 4 - 1), size=rows)
        if i % 5 == 0:
            values[rng.random(rows) < 0.01] = np.nan
        columns[f"f{i:02d}"] = values
    for i in range(INTS):
        columns[f"n{i}"] = rng.integers(0, 10 ** (i + 1), size=rows)
    for i in range(CATEGORIES):
        columns[f"c{i}"] = pd.Series(rng.choice([f"k{j}" for j in range(3 + 4 * i)], size=rows), dtype="str")
    columns[TARGET] = rng.integers(0, 2, size=rows)
    return pd.DataFrame(columns)


def default_suite(frame: Any) -> Any:
    """The suite the pipeline infers from a training split (ranges as warnings)."""
    from tasks.config import ValidateParams
    from tasks.contract import infer_suite

    return infer_suite(frame, TARGET, ValidateParams(), strict=False)


# ---- (a) GE against pandas -----------------------------------------------------------------------------


def ge_check(frame: Any, suite: Any) -> dict[str, Any]:
    from tasks.validate import validate_frames

    return validate_frames({"data": frame}, suite)


def pandas_check(frame: Any, suite: Any) -> list[dict[str, Any]]:
    """Every expectation of the suite, by hand in pandas: the same rule, the same count, the same verdict."""
    return [
        pandas_rule(frame, e.configuration.type, dict(e.configuration.kwargs)) for e in suite.expectations
    ]


def pandas_rule(frame: Any, kind: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    rows = len(frame)
    if kind == "expect_table_columns_to_match_set":
        return {"success": set(frame.columns) == set(kwargs["column_set"])}
    if kind == "expect_table_row_count_to_be_between":
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        return {"success": (low is None or rows >= low) and (high is None or rows <= high)}
    if kind == "expect_compound_columns_to_be_unique":
        part = frame[list(kwargs["column_list"])]
        kept = part[~part.isna().all(axis=1)]
        return mostly_result(int(kept.duplicated(keep=False).sum()), len(kept), kwargs)
    if kind == "expect_column_unique_value_count_to_be_between":
        distinct = frame[kwargs["column"]].nunique()
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        return {"success": (low is None or distinct >= low) and (high is None or distinct <= high)}
    series = frame[kwargs["column"]]
    if kind == "expect_column_values_to_not_be_null":
        return mostly_result(int(series.isna().sum()), rows, kwargs)
    values = series.dropna()
    if kind == "expect_column_values_to_match_regex":
        if values.dtype.kind in "iuf":  # a numeric dtype holds no text: only ±inf can fail
            bad = ~np.isfinite(values.to_numpy(dtype="float64"))
        else:
            bad = ~values.astype(str).str.contains(kwargs["regex"]).to_numpy()
        return mostly_result(int(bad.sum()), len(values), kwargs)
    if kind == "expect_column_values_to_be_between":
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        bad = np.zeros(len(values), dtype=bool)
        if low is not None:
            bad |= (values < low).to_numpy()
        if high is not None:
            bad |= (values > high).to_numpy()
        return mostly_result(int(bad.sum()), len(values), kwargs)
    if kind == "expect_column_values_to_be_in_set":
        return mostly_result(int((~values.isin(kwargs["value_set"])).sum()), len(values), kwargs)
    raise ValueError(f"no pandas version of {kind}")


def mostly_result(unexpected: int, considered: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    mostly = kwargs.get("mostly")
    mostly = 1.0 if mostly is None else mostly
    success = considered == 0 or (considered - unexpected) / considered >= mostly
    return {"success": success, "unexpected_count": unexpected}


def same_results(ge: dict[str, Any], pandas: list[dict[str, Any]]) -> list[str]:
    """Expectations where GE and pandas disagree (verdict or count): empty when the rules are the same."""
    items = ge["splits"]["data"]["expectations"]
    differ = []
    for item, mine in zip(items, pandas, strict=True):
        if item["success"] != mine["success"] or item.get("unexpected_count") != mine.get("unexpected_count"):
            differ.append(
                f"{item['type']} {item.get('column')}: GE {item['success']}/{item.get('unexpected_count')}"
            )
    return differ


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = run()
    return time.perf_counter() - start, out


def bench_ge_vs_pandas(frame: Any, suite: Any, repeats: int) -> dict[str, Any]:
    """Alternating repeats (order swapped each round), after one warm-up run of each side."""
    sides = {"ge": lambda: ge_check(frame, suite), "pandas": lambda: pandas_check(frame, suite)}
    outputs = {name: run() for name, run in sides.items()}  # warm-up; imports and caches
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for rep in range(repeats):
        for name in list(sides) if rep % 2 == 0 else list(sides)[::-1]:
            elapsed, outputs[name] = timed(sides[name])
            seconds[name].append(elapsed)
    ge_s, pandas_s = median(seconds["ge"]), median(seconds["pandas"])
    return {
        "rows": len(frame),
        "columns": len(frame.columns),
        "expectations": len(suite.expectations),
        "seconds": seconds,
        "ge_s": ge_s,
        "pandas_s": pandas_s,
        "ratio": ratio(ge_s, pandas_s),
        "goal_ratio": GOAL_RATIO,
        "meets_goal": meets(ratio(ge_s, pandas_s), GOAL_RATIO),
        "ge_rows_per_s": len(frame) / ge_s,
        "pandas_rows_per_s": len(frame) / pandas_s,
        "disagreements": same_results(outputs["ge"], outputs["pandas"]),
        "ge_success": outputs["ge"]["success"],
    }


def breakdown(frame: Any, suite: Any) -> list[dict[str, Any]]:
    """One run per expectation type on each side: where the time goes (GE's includes its fixed cost)."""
    import great_expectations as gx

    groups: dict[str, list[Any]] = {}
    for expectation in suite.expectations:
        groups.setdefault(expectation.configuration.type, []).append(expectation.configuration)
    rows = []
    for kind, configs in groups.items():
        part = gx.ExpectationSuite(name=kind, expectations=[c.to_domain_obj() for c in configs])
        ge_s, _ = timed(lambda part=part: ge_check(frame, part))
        pandas_s, _ = timed(lambda part=part: pandas_check(frame, part))
        rows.append({"type": kind, "count": len(configs), "ge_s": ge_s, "pandas_s": pandas_s})
    return rows


def child_main(args: argparse.Namespace) -> int:
    """A fresh process: load the data and suite, run one side once; print its RSS before and peak during
    the run (MiB, as JSON). The peak is reset after loading where Linux allows it (/proc/self/clear_refs),
    so that reading the Parquet file does not hide the validation's own peak."""
    import gc

    import pandas as pd

    from tasks.contract import load_suite

    frame = pd.read_parquet(args.folder / "table.parquet")
    suite = load_suite(args.folder / "suite.json")
    gc.collect()
    reset = reset_peak_rss()
    before = proc_status_mib("VmRSS")
    if args.child == "ge":
        ge_check(frame, suite)
    elif args.child == "pandas":
        pandas_check(frame, suite)
    peak = proc_status_mib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"before_mib": before, "peak_mib": peak, "peak_reset": reset}))
    return 0


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def proc_status_mib(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss(folder: Path) -> dict[str, Any]:
    """Per side, in a fresh process: RSS with the data and suite loaded, and the peak while validating."""
    out: dict[str, Any] = {}
    for side in ("ge", "pandas"):
        cmd = [sys.executable, "-m", "bench.validation", "--child", side, "--folder", str(folder)]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        out[side] = {**figures, "added_mib": figures["peak_mib"] - (figures["before_mib"] or 0)}
    return out


# ---- (b) drift -----------------------------------------------------------------------------------------


def bench_drift(frame: Any, repeats: int) -> dict[str, Any]:
    """Profile the table, then compare a copy with SHIFTED x10; skipped when tasks.drift is absent."""
    try:
        from tasks.drift import compare, profile_split
    except ImportError as err:
        return {"skipped": f"tasks.drift not available ({err})"}
    shifted = frame.copy()
    shifted[SHIFTED] = shifted[SHIFTED] * 10
    try:
        profile_s, profile = timed(lambda: profile_split(frame, "tabular", TARGET))
        times, report = [], None
        for _ in range(max(1, repeats)):
            elapsed, report = timed(lambda: compare(profile, shifted))
            times.append(elapsed)
    except TypeError as err:  # a signature this bench does not know
        return {"skipped": f"tasks.drift API differs: {err}"}
    compare_s = median(times)
    return {
        "rows": len(frame),
        "profile_s": profile_s,
        "compare_s": compare_s,
        "compare_rows_per_s": len(frame) / compare_s,
        "shifted_column": SHIFTED,
        "critical_columns": report.get("critical_columns"),
        "caught": SHIFTED in (report.get("critical_columns") or []),
    }


# ---- (c) the chunked path ------------------------------------------------------------------------------


def write_big_csv(path: Path, gigabytes: float) -> int:
    """Append synthetic rows until the file reaches the size; returns the rows written."""
    target, rows, seed = gigabytes * 1e9, 0, SEED + 100
    low, high = ROWS_PER_WRITE
    per_write = int(min(high, max(low, target / CSV_ROW_BYTES / 10)))
    import pyarrow as pa
    from pyarrow import csv as pa_csv

    with open(path, "wb") as fh:  # pyarrow's CSV writer: pandas' to_csv took ~6 min per GB here
        while True:
            part = pa.Table.from_pandas(make_table(per_write, seed), preserve_index=False)
            pa_csv.write_csv(part, fh, pa_csv.WriteOptions(include_header=rows == 0))
            rows += part.num_rows
            seed += 1
            if fh.tell() >= target:
                return rows


def bench_chunked(folder: Path, gigabytes: float, chunk_rows: int | None, row_bytes: float) -> dict[str, Any]:
    from tasks.config import ValidateParams

    path = folder / "big.csv"
    write_s, rows = timed(lambda: write_big_csv(path, gigabytes))
    chunk_rows = chunk_rows or ValidateParams().chunk_rows
    cmd = [
        sys.executable,
        "-m",
        "tasks.contract_check",
        "--data",
        str(path),
        "--suite",
        str(folder / "suite.json"),
    ]
    cmd += ["--chunk-rows", str(chunk_rows), "--out", str(folder / "big.results.json")]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD_RSS, *cmd], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise RuntimeError(f"contract check failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    report = json.loads((folder / "big.results.json").read_text())
    size = path.stat().st_size
    rss = int(done.stdout.strip().splitlines()[-1]) * 1024
    return {
        "file_bytes": size,
        "rows": rows,
        "write_s": write_s,
        "chunk_rows": chunk_rows,
        "chunks": report["chunks"],
        "check_s": wall,
        "rows_per_s": rows / wall,
        "peak_rss_bytes": rss,
        "rss_over_file": rss / size,
        "chunk_in_memory_bytes": chunk_rows * row_bytes,
        "hash_bytes": rows * 8,
        "success": report["success"],
        "failures": report["failures"][:3],
        "memory_bound": report["memory_bound"],
    }


# ---- report --------------------------------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    import great_expectations as gx
    import pandas as pd

    from tasks.contract import suite_to_dict
    from tasks.io import write_json

    frame = make_table(args.rows)
    suite = default_suite(frame)
    row_bytes = frame.memory_usage(deep=True).sum() / len(frame)
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-validation-") as tmp:
        folder = Path(tmp)
        frame.to_parquet(folder / "table.parquet", index=False)
        write_json(folder / "suite.json", suite_to_dict(suite))
        ge = bench_ge_vs_pandas(frame, suite, args.repeats)
        ge["breakdown"] = breakdown(frame, suite)
        ge["peak_rss"] = peak_rss(folder)
        ge["row_bytes_in_memory"] = row_bytes
        drift = bench_drift(frame, args.repeats)
        del frame
        chunked = bench_chunked(folder, args.big_gb, args.chunk_rows, row_bytes)
    return {
        "name": NAME,
        "created_at": timestamp(),
        "machine": machine_info(),
        "versions": {"great_expectations": gx.__version__, "pandas": pd.__version__, "numpy": np.__version__},
        "repeats": args.repeats,
        "validation": ge,
        "drift": drift,
        "chunked": chunked,
    }


def mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def print_report(report: dict[str, Any]) -> None:
    v = report["validation"]
    rss = v["peak_rss"]
    print_table(
        f"(a) {v['rows']:,} rows x {v['columns']} columns, {v['expectations']} expectations (the default "
        f"inferred suite): median of {report['repeats']} alternating repeats",
        [
            "side",
            "wall",
            "rows/s",
            "RSS before",
            "peak RSS",
            "added",
            "GE/pandas",
            f"<= {v['goal_ratio']:g}x",
        ],
        [
            [
                name,
                f"{v[side + '_s']:.2f} s",
                f"{v[side + '_rows_per_s']:,.0f}",
                f"{rss[side]['before_mib'] or 0:,.0f} MiB",
                f"{rss[side]['peak_mib']:,.0f} MiB",
                f"{rss[side]['added_mib']:+,.0f} MiB",
                format_ratio(v["ratio"]) if side == "ge" else "",
                verdict(v["meets_goal"]) if side == "ge" else "",
            ]
            for name, side in (("GE", "ge"), ("pandas", "pandas"))
        ],
    )
    agree = "yes" if not v["disagreements"] else f"NO: {'; '.join(v['disagreements'][:3])}"
    print(f"same verdicts and counts on every expectation: {agree}")
    print(
        "RSS before: a fresh process with the data and suite loaded; peak: during one run (peak reset first)"
    )
    print_table(
        "where the time goes: one run per expectation type (GE's figure includes its fixed cost per run)",
        ["type", "n", "GE", "pandas"],
        [
            [r["type"], str(r["count"]), f"{r['ge_s']:.2f} s", f"{r['pandas_s']:.2f} s"]
            for r in v["breakdown"]
        ],
    )
    d = report["drift"]
    if "skipped" in d:
        print(f"(b) drift: skipped: {d['skipped']}")
    else:
        print_table(
            f"(b) drift on {d['rows']:,} rows ({d['shifted_column']} x10 in the new data)",
            ["profile", "compare", "compare rows/s", "shift caught", "critical columns"],
            [
                [
                    f"{d['profile_s']:.2f} s",
                    f"{d['compare_s']:.2f} s",
                    f"{d['compare_rows_per_s']:,.0f}",
                    "yes" if d["caught"] else "NO",
                    ", ".join(d["critical_columns"] or []),
                ]
            ],
        )
    c = report["chunked"]
    size = f"{c['file_bytes'] / 1e9:.2f} GB"
    print_table(
        f"(c) chunked check of a {size} CSV ({c['rows']:,} rows) in chunks of {c['chunk_rows']:,}",
        ["chunks", "wall", "rows/s", "peak RSS", "RSS / file", "one chunk in memory", "hashes", "passed"],
        [
            [
                str(c["chunks"]),
                f"{c['check_s']:.1f} s",
                f"{c['rows_per_s']:,.0f}",
                mib(c["peak_rss_bytes"]),
                f"{c['rss_over_file']:.2f}",
                mib(c["chunk_in_memory_bytes"]),
                mib(c["hash_bytes"]),
                "yes" if c["success"] else f"NO: {c['failures']}",
            ]
        ],
    )
    print(f"memory bound: {c['memory_bound']}")
    print(f"load average: {format_load(report['machine']['load_average'])} (others' load skews wall times)")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    report = run_benchmark(args)
    print_report(report)
    print(f"wrote {write_results(args.out.stem, report, args.out.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
