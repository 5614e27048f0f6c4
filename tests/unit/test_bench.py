"""The benchmarks' pure helpers: statistics, goal checks, tables, results files, log parsing."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(ROOT))

from bench.common import median, meets, ratio, render_table, share, verdict, write_results  # noqa: E402
from bench.pipeline import STAGES, BenchError, Run, excluded, param_change_ok, stage_times  # noqa: E402


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
    assert param_change_ok(Run("x", 1.0, "", times))
    with pytest.raises(BenchError, match="promote"):
        stage_times("\n".join(lines[:-1]))


def test_copy_excludes_outputs_and_caches(tmp_path):
    names = ["data", "tasks", ".venv", "dvc.yaml", "__pycache__", "shipyard.egg-info"]
    assert excluded(tmp_path, str(tmp_path), names) == {"data", ".venv", "__pycache__", "shipyard.egg-info"}
    assert excluded(tmp_path, str(tmp_path / ".dvc"), ["cache", "config"]) == {"cache"}
