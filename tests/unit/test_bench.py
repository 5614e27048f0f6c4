"""The benchmarks' pure helpers: statistics, goal checks, tables, results files, log parsing."""

import json
from datetime import datetime

import pytest

from bench.common import median, meets, ratio, render_table, share, verdict, write_results
from bench.pipeline import STAGES, BenchError, Run, excluded, param_change_ok, phases, stage_times


def test_median_and_ratios():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 2.0, 3.0]) == 2.5
    assert ratio(6.0, 2.0) == 3.0 and ratio(1.0, 0.0) is None
    assert share(1.0, 4.0) == 0.25
    with pytest.raises(ValueError):
        median([])


def test_goal_verdicts():
    assert (meets(2.9, 3.0), meets(3.1, 3.0), meets(None, 3.0)) == (True, False, None)
    assert [verdict(v) for v in (True, False, None)] == ["pass", "FAIL", "n/a"]


def test_render_table_aligns_columns():
    text = render_table("T", ["figure", "value"], [["cold", "1.00 s"], ["no-op dvc", "0.40 s"]])
    lines = text.splitlines()
    assert lines[0] == "T"
    assert lines[1].index("value") == lines[3].index("1.00 s") == lines[4].index("0.40 s")


def test_write_results_is_whole_json(tmp_path):
    path = write_results("demo", {"a": 1}, folder=tmp_path)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["demo.json"]


def test_stage_times_from_prefect_log():
    lines = [f"Task run '{s}' - Finished in state Skipped('{s}: unchanged', type=COMPLETED)" for s in STAGES]
    lines[3] = "Task run 'train' - Finished in state Completed('train: ran in 5.48 s')"
    times = stage_times("\n".join(lines))
    assert times["train"] == 5.48 and times["ingest"] is None
    assert param_change_ok(Run("x", 1.0, "", stages=times))
    with pytest.raises(BenchError, match="promote"):
        stage_times("\n".join(lines[:-1]))


def test_copy_excludes_outputs_and_caches(tmp_path):
    names = ["data", "tasks", ".venv", "dvc.yaml", "__pycache__", "shipyard.egg-info"]
    assert excluded(tmp_path, str(tmp_path), names) == {"data", ".venv", "__pycache__", "shipyard.egg-info"}
    assert excluded(tmp_path, str(tmp_path / ".dvc"), ["cache", "config"]) == {"cache"}


def test_phases_split_a_run_at_its_flow_run_log_lines():
    output = (
        "12:00:05.000 | INFO    | Flow run 'a-b' - Beginning flow run 'a-b' for flow 'shipyard-pipeline'\n"
        "12:00:07.500 | INFO    | Flow run 'a-b' - Finished in state Completed()\n"
    )
    run = Run("no-op", 9.0, output, started_at=datetime(2026, 1, 1, 12, 0, 0).timestamp())
    assert phases(run) == {"before_flow": 5.0, "flow": 2.5, "after_flow": 1.5, "total": 9.0}
