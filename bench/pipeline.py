"""The pipeline's wall times on the CPU: a cold `shipyard run`, no-op reruns, one changed param.

    python -m bench.pipeline [--repeats 3] [--keep]

Runs in a throwaway copy of the project (its own git repo, no data, models or DVC cache), with the
project's .venv/bin first on PATH and a temporary PREFECT_HOME, so neither the project's outputs nor
~/.prefect are touched. Every figure is the wall time of the command a user types. Stage times come from
the same cold run: each stage task's final state message ("<stage>: ran in X s") in Prefect's log.
Needs prefect and dvc (not installed on the GPU machines).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from bench.common import (
    format_load,
    format_percent,
    format_seconds,
    machine_info,
    median,
    meets,
    print_table,
    share,
    timestamp,
    verdict,
    write_results,
)

NAME = "pipeline"
PROJECT = Path(__file__).resolve().parents[1]
STAGES = ["default_data", "ingest", "validate", "train", "evaluate", "export", "promote"]  # as in dvc.yaml
GOALS = {
    "cold_s": 60.0,
    "overhead_share": 0.10,
    "dvc_noop_s": 3.0,
    "temp_api_noop_s": 6.0,
    "server_noop_s": 3.0,
}

# Build outputs, caches and local state that a fresh checkout does not have (paths from the project root).
EXCLUDED_PATHS = {
    ".venv",
    ".git",
    "data",
    "models",
    "reports",
    "export",
    "registry",
    "dvc.lock",
    "tests",
    ".shipyard",
    ".pytest_cache",
    ".ruff_cache",
    ".dvc/cache",
    ".dvc/tmp",
    "bench/results",
}
EXCLUDED_NAMES = {"__pycache__"}
GIT = [
    "git",
    "-c",
    "user.name=shipyard-bench",
    "-c",
    "user.email=bench@localhost",
    "-c",
    "commit.gpgsign=false",
]

# A task run's final state as Prefect logs it; the message is set in flows/pipeline.py.
STAGE_STATE = re.compile(r"'(?P<stage>\w+): (?:ran in (?P<seconds>[0-9.]+) s|unchanged)'")
# The flow run's first and last lines in Prefect's console log ("HH:MM:SS.mmm | INFO | Flow run 'x' - ...").
FLOW_EVENT = re.compile(
    r"^(?P<clock>\d\d:\d\d:\d\d\.\d+) \| \w+ *\| Flow run '[^']*' - "
    r"(?P<event>Beginning flow run|Finished in state)",
    re.MULTILINE,
)

API_LOG_ERROR = "--- Error logging to API ---"

OVERHEAD_NOTE = (
    "orchestration overhead = `shipyard run` wall time minus the stages' own times: Python start-up, imports "
    "(typer, pydantic, prefect), the temporary Prefect API server's start and stop, Prefect's flow and "
    "task-run bookkeeping, DVC's status checks, and the exit (Prefect flushing logs and events to the API). "
    "DVC's commit after a stage counts as the stage's own time."
)
LOG_ERROR_NOTE = (
    f"'{API_LOG_ERROR}': at exit Prefect's log worker found the temporary API already gone; such an exit "
    "waits on connection retries (1.5 s usually, over 70 s in some runs while writing this benchmark). "
    "PREFECT_LOGGING_TO_API_ENABLED=false removed both the error and the wait."
)

# What a no-op `shipyard run` does, step by step, in one fresh interpreter (see noop_breakdown).
PROBE = """
import json, time
marks = [("start", time.perf_counter())]
import flows.cli, tasks.config, ruamel.yaml
marks.append(("cli_imports", time.perf_counter()))
import flows.pipeline
marks.append(("prefect_import", time.perf_counter()))
from prefect.server.api.server import SubprocessASGIServer
server = SubprocessASGIServer()
server.start(120)
marks.append(("temp_server_start", time.perf_counter()))
from flows import stages
if hasattr(stages, "stale_stages"):  # one status for the whole pipeline, as the flow asks it
    changed = sorted(stages.stale_stages())
else:
    changed = [name for name in stages.STAGES if not stages.is_up_to_date(name)]
marks.append(("dvc_status", time.perf_counter()))
server.stop()
marks.append(("temp_server_stop", time.perf_counter()))
steps = {name: t - marks[i][1] for i, (name, t) in enumerate(marks[1:])}
print("BENCH_PROBE " + json.dumps({"steps": steps, "changed": changed}))
"""

PROBE_STEPS = {
    "interpreter": "Python start-up and exit",
    "cli_imports": "CLI imports (typer, pydantic, params)",
    "prefect_import": "import prefect (flows.pipeline)",
    "temp_server_start": "temporary API server start (uvicorn + DB)",
    "dvc_status": "import dvc + DVC status of the stages",
    "temp_server_stop": "temporary API server stop",
}


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and shows the command's output."""


@dataclass
class Run:
    """One command's wall time and output; `stages` maps each stage to its seconds (None: skipped)."""

    label: str
    seconds: float
    output: str = field(repr=False)
    started_at: float = 0.0  # time.time() at launch, to place Prefect's log timestamps
    stages: dict[str, float | None] = field(default_factory=dict)

    @property
    def api_log_errors(self) -> int:
        """Prefect's log worker failing to reach the API (seen at exit, after the temporary API stops)."""
        return self.output.count(API_LOG_ERROR)

    @property
    def ran(self) -> list[str]:
        return [name for name in STAGES if name in self.stages and self.stages[name] is not None]


@dataclass
class Workspace:
    root: Path
    env: dict[str, str]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each no-op figure (median)")
    parser.add_argument("--keep", action="store_true", help="keep the throwaway project copy")
    return parser.parse_args(argv)


def venv_bin() -> Path:
    """The project's .venv/bin (where shipyard, dvc and prefect live), else this interpreter's folder."""
    candidate = PROJECT / ".venv" / "bin"
    return candidate if (candidate / "shipyard").exists() else Path(sys.executable).parent


def check_tools(bin_dir: Path) -> None:
    missing = [tool for tool in ("shipyard", "dvc", "prefect") if not (bin_dir / tool).exists()]
    if missing:
        raise BenchError(f"{bin_dir}: missing {', '.join(missing)}; run `make install` first")


def excluded(root: Path, folder: str, names: list[str]) -> set[str]:
    """shutil.copytree's ignore callback: drop build outputs, caches and local state."""
    relative = Path(folder).relative_to(root)
    return {
        name
        for name in names
        if name in EXCLUDED_NAMES
        or name.endswith(".egg-info")
        or (relative / name).as_posix() in EXCLUDED_PATHS
    }


def copy_project(destination: Path) -> Path:
    """The project's files (committed or not) without outputs, as a fresh git repo for DVC."""
    root = destination / "project"
    shutil.copytree(
        PROJECT, root, symlinks=True, ignore=lambda folder, names: excluded(PROJECT, folder, names)
    )
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "benchmark snapshot"]):
        subprocess.run([*GIT, *args], cwd=root, check=True, capture_output=True)
    return root


def bench_env(root: Path, prefect_home: Path, bin_dir: Path) -> dict[str, str]:
    """The copy's code first, no Prefect settings from the caller, CPU only, unwrapped log lines."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(root),  # the console scripts would otherwise import the editable install's code
        PREFECT_HOME=str(prefect_home),
        CUDA_VISIBLE_DEVICES="",
        COLUMNS="250",
    )
    return env


def run_command(ws: Workspace, label: str, command: list[str], timeout: float, **env: str) -> Run:
    """Run a command in the copy and time it; a non-zero exit is a BenchError with the output's tail.

    The command gets its own process group, so that on a timeout its children (a temporary Prefect
    server) are stopped with it instead of being orphaned.
    """
    started_at, started = time.time(), time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=ws.root,
        env={**ws.env, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise BenchError(f"{label}: `{' '.join(command)}` took over {timeout:.0f} s") from err
    finally:
        stop_process_group(process)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        tail = "\n".join(output.splitlines()[-25:])
        raise BenchError(f"{label}: `{' '.join(command)}` exited {process.returncode}:\n{tail}")
    print(f"  {label}: {seconds:.2f} s", flush=True)
    return Run(label, seconds, output, started_at)


def stage_times(output: str) -> dict[str, float | None]:
    """Each stage's own seconds (None when skipped) from the stage tasks' final state messages."""
    found = {
        m["stage"]: (float(m["seconds"]) if m["seconds"] else None) for m in STAGE_STATE.finditer(output)
    }
    missing = [name for name in STAGES if name not in found]
    if missing:
        raise BenchError(
            f"no final state for stages {missing} in `shipyard run` output (expected Prefect lines "
            "\"Finished in state Completed('<stage>: ran in X s')\" or \"...('<stage>: unchanged')\")"
        )
    return found


def clock_seconds(text: str) -> float:
    hours, minutes, seconds = text.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def local_clock(epoch: float) -> float:
    """Seconds since local midnight, the clock Prefect's log timestamps use."""
    moment = datetime.fromtimestamp(epoch)
    return moment.hour * 3600 + moment.minute * 60 + moment.second + moment.microsecond / 1e6


def phases(run: Run) -> dict[str, float]:
    """A `shipyard run` split at its flow run's first and last log lines: before, during and after."""
    events = {m["event"]: clock_seconds(m["clock"]) for m in FLOW_EVENT.finditer(run.output)}
    if len(events) < 2:
        raise BenchError(f"{run.label}: no 'Beginning flow run' / 'Finished in state' lines in its output")
    before = (events["Beginning flow run"] - local_clock(run.started_at)) % 86400
    flow = (events["Finished in state"] - events["Beginning flow run"]) % 86400
    return {
        "before_flow": before,
        "flow": flow,
        "after_flow": run.seconds - before - flow,
        "total": run.seconds,
    }


def median_phases(runs: Sequence[Run]) -> dict[str, float]:
    per_run = [phases(run) for run in runs]
    return {key: median([p[key] for p in per_run]) for key in per_run[0]}


def shipyard_run(ws: Workspace, label: str, *args: str, timeout: float = 120, **env: str) -> Run:
    run = run_command(ws, label, ["shipyard", "run", *args], timeout, **env)
    run.stages = stage_times(run.output)
    return run


def init_prefect_home(ws: Workspace) -> float:
    """Start and stop a temporary API once: creates Prefect's database, a one-time cost of first use.

    Waits longer than Prefect's default 20 s (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS), which
    a first start on a busy 2-core machine can exceed.
    """
    code = "from prefect.server.api.server import SubprocessASGIServer as S; s = S(); s.start(170); s.stop()"
    return run_command(ws, "first use of Prefect (database creation)", ["python", "-c", code], 180).seconds


def repeat(ws: Workspace, times: int, label: str, command: list[str], **env: str) -> list[Run]:
    runs = []
    for i in range(times):
        run = run_command(ws, f"{label} [{i + 1}/{times}]", command, 120, **env)
        if command[0] == "shipyard":
            run.stages = stage_times(run.output)
        runs.append(run)
    return runs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(api_url: str, server: subprocess.Popen[Any], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise BenchError(f"prefect server exited {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise BenchError(f"prefect server not healthy after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop_process_group(process: subprocess.Popen[Any]) -> None:
    """Stop a process started in its own session, and its children (SIGTERM, then SIGKILL)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def prefect_server(ws: Workspace) -> Iterator[tuple[str, float]]:
    """`prefect server start` on a free port (UI off); yields its API URL and start-up seconds."""
    port, log = free_port(), ws.root.parent / "prefect-server.log"
    command = ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    started = time.perf_counter()
    with open(log, "wb") as out:
        server = subprocess.Popen(
            command,
            cwd=ws.root,
            env={**ws.env, "PREFECT_UI_ENABLED": "false"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        api_url = f"http://127.0.0.1:{port}/api"
        wait_healthy(api_url, server, log)
        seconds = time.perf_counter() - started
        print(f"  prefect server start (until /api/health): {seconds:.2f} s", flush=True)
        yield api_url, seconds
    finally:
        stop_process_group(server)


def run_probe(ws: Workspace) -> dict[str, Any]:
    """One fresh interpreter doing a no-op run's steps in order, each timed (plus start-up/exit)."""
    run = run_command(ws, "no-op breakdown probe", ["python", "-c", PROBE], 120)
    line = next(line for line in run.output.splitlines() if line.startswith("BENCH_PROBE "))
    probe = json.loads(line.removeprefix("BENCH_PROBE "))
    probe["steps"]["interpreter"] = run.seconds - sum(probe["steps"].values())
    return probe


def step_costs(probes: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Median seconds of each step of a no-op run, each measured alone (one after another)."""
    return {name: median([p["steps"][name] for p in probes]) for name in PROBE_STEPS}


def changed_epochs(root: Path) -> int:
    """A train.epochs different from params.yaml's (one fewer, so the rerun is not longer)."""
    epochs = int(yaml.safe_load((root / "params.yaml").read_text())["train"]["epochs"])
    return epochs - 1 if epochs > 1 else epochs + 1


def param_change_ok(run: Run) -> bool:
    """train.epochs changed: train must run, and no stage before it."""
    before_train = STAGES[: STAGES.index("train")]
    return "train" in run.ran and not set(run.ran) & set(before_train)


def noop_ok(runs: Sequence[Run]) -> bool:
    """A no-op rerun runs nothing (`dvc repro` prints "Running stage" for each stage it runs)."""
    return all(not run.ran and "Running stage" not in run.output for run in runs)


def measure(ws: Workspace, repeats: int) -> dict[str, Any]:
    """Every figure, in an order that leaves each run's preconditions in place."""
    first_use = init_prefect_home(ws)
    cold = shipyard_run(ws, "cold: shipyard run", timeout=300)
    dvc_noop = repeat(ws, repeats, "no-op: dvc repro", ["dvc", "repro"])
    temp_noop = repeat(ws, repeats, "no-op: shipyard run (temporary API)", ["shipyard", "run"])
    probes = [run_probe(ws) for _ in range(repeats)]
    epochs = changed_epochs(ws.root)
    changed = shipyard_run(ws, "one param changed: shipyard run", "--set", f"train.epochs={epochs}")
    with prefect_server(ws) as (api_url, server_start):
        server_noop = repeat(
            ws, repeats, "no-op: shipyard run (server)", ["shipyard", "run"], PREFECT_API_URL=api_url
        )
    return {
        "first_use": first_use,
        "cold": cold,
        "dvc_noop": dvc_noop,
        "temp_noop": temp_noop,
        "server_noop": server_noop,
        "server_start": server_start,
        "probes": probes,
        "changed": changed,
        "changed_set": f"train.epochs={epochs}",
    }


def summarize(m: dict[str, Any]) -> dict[str, Any]:
    """The figures, their goals and verdicts, as written to JSON."""
    cold: Run = m["cold"]
    stage_sum = sum(s for s in cold.stages.values() if s is not None)
    overhead = cold.seconds - stage_sum
    noops = {key: [r.seconds for r in m[key]] for key in ("dvc_noop", "temp_noop", "server_noop")}
    shipyard_runs = [cold, *m["temp_noop"], m["changed"], *m["server_noop"]]
    return {
        "cold_s": cold.seconds,
        "cold_stages_s": cold.stages,
        "cold_stage_shares": {name: share(s or 0.0, cold.seconds) for name, s in cold.stages.items()},
        "stages_sum_s": stage_sum,
        "overhead_s": overhead,
        "overhead_share": share(overhead, cold.seconds),
        "flow_overhead_s": phases(cold)["flow"] - stage_sum,
        "flow_overhead_share": share(phases(cold)["flow"] - stage_sum, phases(cold)["flow"]),
        "prefect_first_use_s": m["first_use"],
        "noop_runs_s": noops,
        "dvc_noop_s": median(noops["dvc_noop"]),
        "temp_api_noop_s": median(noops["temp_noop"]),
        "server_noop_s": median(noops["server_noop"]),
        "server_start_s": m["server_start"],
        "noop_ran_nothing": noop_ok(m["dvc_noop"] + m["temp_noop"] + m["server_noop"]),
        "noop_step_costs_s": step_costs(m["probes"]),
        "phases_s": {
            "cold": {**phases(cold), "flow_minus_stages": phases(cold)["flow"] - stage_sum},
            "temp_noop": median_phases(m["temp_noop"]),
            "server_noop": median_phases(m["server_noop"]),
            "changed": phases(m["changed"]),
        },
        "api_log_errors": {run.label: run.api_log_errors for run in shipyard_runs},
        "param_change": {
            "set": m["changed_set"],
            "seconds": m["changed"].seconds,
            "ran": m["changed"].ran,
            "stages_s": m["changed"].stages,
            "ok": param_change_ok(m["changed"]),
        },
    }


def row(figure: str, value: str, goal: str = "", ok: bool | None = None) -> list[str]:
    """A table row: figure, value, goal, verdict (none without a goal)."""
    return [figure, value, goal, verdict(ok) if goal else ""]


def repeated_row(s: dict[str, Any], figure: str, key: str, runs: str) -> list[str]:
    """A no-op figure: median of the repeats (and their range) against its goal."""
    times = s["noop_runs_s"][runs]
    value = f"{format_seconds(s[key])} ({min(times):.2f}–{max(times):.2f})"
    return row(f"{figure} (median of {len(times)})", value, f"≤ {GOALS[key]:g} s", meets(s[key], GOALS[key]))


def figure_rows(s: dict[str, Any]) -> list[list[str]]:
    cold_ok = meets(s["cold_s"], GOALS["cold_s"])
    rows = [
        row("cold pipeline: shipyard run", format_seconds(s["cold_s"]), f"≤ {GOALS['cold_s']:g} s", cold_ok)
    ]
    for name, seconds in s["cold_stages_s"].items():
        share_text = format_percent(s["cold_stage_shares"][name])
        rows.append(row(f"  stage {name}", f"{format_seconds(seconds)} ({share_text})"))
    overhead = f"{format_seconds(s['overhead_s'])} ({format_percent(s['overhead_share'])})"
    overhead_ok = meets(s["overhead_share"], GOALS["overhead_share"])
    change = s["param_change"]
    changed = f"{format_seconds(change['seconds'])}; ran {', '.join(change['ran']) or 'nothing'}"
    log_errors = sum(1 for n in s["api_log_errors"].values() if n)
    return [
        *rows,
        row("orchestration overhead (cold)", overhead, f"≤ {GOALS['overhead_share']:.0%}", overhead_ok),
        row(
            "  of it inside the flow run (tasks, DVC)",
            f"{format_seconds(s['flow_overhead_s'])} ({format_percent(s['flow_overhead_share'])})",
            f"≤ {GOALS['overhead_share']:.0%}",
            meets(s["flow_overhead_share"], GOALS["overhead_share"]),
        ),
        repeated_row(s, "no-op: dvc repro", "dvc_noop_s", "dvc_noop"),
        repeated_row(s, "no-op: shipyard run, temporary API", "temp_api_noop_s", "temp_noop"),
        repeated_row(s, "no-op: shipyard run, Prefect server", "server_noop_s", "server_noop"),
        row(
            "no-op reruns ran no stage",
            "yes" if s["noop_ran_nothing"] else "NO",
            "all skipped",
            s["noop_ran_nothing"],
        ),
        row(f"one param changed: --set {change['set']}", changed, "train and later only", change["ok"]),
        row("first use of Prefect (DB creation, once)", format_seconds(s["prefect_first_use_s"])),
        row("shipyard runs that hit 'Error logging to API'", f"{log_errors} of {len(s['api_log_errors'])}"),
    ]


PHASE_RUNS = {
    "cold": "cold run",
    "temp_noop": "no-op, temporary API (median)",
    "server_noop": "no-op, Prefect server (median)",
    "changed": "one param changed",
}


def phase_rows(s: dict[str, Any]) -> list[list[str]]:
    keys = ["before_flow", "flow", "after_flow", "total"]
    return [
        [label, *(format_seconds(s["phases_s"][run][key]) for key in keys)]
        for run, label in PHASE_RUNS.items()
    ]


def step_rows(s: dict[str, Any]) -> list[list[str]]:
    costs = s["noop_step_costs_s"]
    rows = [[PROBE_STEPS[name], format_seconds(seconds)] for name, seconds in costs.items()]
    return [*rows, ["sum, one after another", format_seconds(sum(costs.values()))]]


def print_report(s: dict[str, Any]) -> None:
    machine = s["machine"]
    start, end = format_load(machine["load_average"]), format_load(machine["load_average_end"])
    print(f"\n{machine['usable_cpus']} CPUs; load average (1, 5, 15 min) at start {start}, at end {end}")
    print_table("shipyard pipeline benchmark (CPU)", ["figure", "value", "goal", "result"], figure_rows(s))
    print(OVERHEAD_NOTE)
    print()
    print_table(
        "timeline of each `shipyard run` (from its flow run's log timestamps)",
        ["run", "before the flow: start-up, imports, API", "flow", "after: summary, exit", "total"],
        phase_rows(s),
    )
    cold = s["phases_s"]["cold"]
    print(
        f"cold flow {format_seconds(cold['flow'])} = stages {format_seconds(s['stages_sum_s'])} "
        f"+ {format_seconds(cold['flow_minus_stages'])} of Prefect task runs and DVC status checks"
    )
    print()
    print_table(
        "what the steps of a no-op run cost alone (fresh interpreter, median)",
        ["step", "seconds"],
        step_rows(s),
    )
    server_start = format_seconds(s["server_start_s"])
    print(f"prefect server start-up (until /api/health): {server_start}, not in the figures")
    if any(s["api_log_errors"].values()):
        print(LOG_ERROR_NOTE)


def run_benchmark(repeats: int, keep: bool) -> dict[str, Any]:
    bin_dir = venv_bin()
    check_tools(bin_dir)
    machine = machine_info()
    scratch = Path(tempfile.mkdtemp(prefix="shipyard-bench-"))
    try:
        root = copy_project(scratch)
        print(f"benchmarking a copy of {PROJECT} in {root}", flush=True)
        ws = Workspace(root, bench_env(root, scratch / "prefect-home", bin_dir))
        summary = summarize(measure(ws, repeats))
    finally:
        if keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    machine["load_average_end"] = machine_info()["load_average"]
    return {
        "name": NAME,
        "created_at": timestamp(),
        "machine": machine,
        "repeats": repeats,
        "goals": GOALS,
        **summary,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run_benchmark(args.repeats, args.keep)
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print_report(report)
    print(f"wrote {write_results(NAME, report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
