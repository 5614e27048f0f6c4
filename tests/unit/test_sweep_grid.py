"""`shipyard sweep`'s plan: grid parsing, key and value checks before anything runs, the best candidate."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from flows.sweep_cli import (
    MAX_CANDIDATES,
    check_grid,
    check_key,
    expand_grid,
    make_plan,
    merge_grid,
    parse_grid_option,
    split_top_level,
    sweep,
)
from tasks.errors import ShipyardError
from tests.project import ROOT

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """dvc.yaml, params.yaml and .dvc/ in a git repository with one commit (the cwd)."""
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / ".dvc").mkdir()
    shutil.copy2(ROOT / ".dvc/config", tmp_path / ".dvc/config")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "project"]):
        subprocess.run([*GIT, *args], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "text, parts",
    [
        ("1e-3,3e-3", ["1e-3", "3e-3"]),
        ("[64,32],[128]", ["[64,32]", "[128]"]),
        ("{a: 1, b: 2},{a: 3}", ["{a: 1, b: 2}", "{a: 3}"]),
        ("'x,y',z", ["'x,y'", "z"]),
        ("64", ["64"]),
    ],
)
def test_values_split_at_top_level_commas_only(text, parts):
    assert split_top_level(text) == parts


def test_grid_values_are_yaml_scalars_and_lists():
    assert parse_grid_option("train.lr=1e-3,3e-3") == ("train.lr", [0.001, 0.003])
    assert parse_grid_option("train.hidden=[64,32],[128]") == ("train.hidden", [[64, 32], [128]])
    assert parse_grid_option("train.hidden=64") == ("train.hidden", [64])
    assert parse_grid_option(" train.model = mlp , cnn") == ("train.model", ["mlp", "cnn"])
    assert parse_grid_option("ingest.table=null,'null'") == ("ingest.table", [None, "null"])


@pytest.mark.parametrize(
    "text, said",
    [("train.lr", "expected KEY.PATH=V1,V2"), ("=1,2", "expected KEY.PATH"), ("train.lr=", "no values")],
)
def test_malformed_grid_options_say_what_is_expected(text, said):
    with pytest.raises(ShipyardError, match=said):
        parse_grid_option(text)


def test_an_empty_value_is_refused():
    with pytest.raises(ShipyardError, match="an empty value"):
        parse_grid_option("train.lr=1e-3,,3e-3")


def test_a_command_line_key_replaces_the_params_values_in_place():
    grid = merge_grid(
        {"train.lr": [0.1], "train.dropout": [0.0, 0.2]}, ["train.lr=0.5,0.7", "train.epochs=3"]
    )
    assert grid == {"train.lr": [0.5, 0.7], "train.dropout": [0.0, 0.2], "train.epochs": [3]}
    assert list(grid) == ["train.lr", "train.dropout", "train.epochs"]


def test_every_combination_is_a_candidate():
    combos = expand_grid({"train.lr": [1, 2], "train.hidden": [[8], [16], [32]]})
    assert len(combos) == 6
    assert combos[0] == {"train.lr": 1, "train.hidden": [8]}
    assert combos[-1] == {"train.lr": 2, "train.hidden": [32]}
    assert len({str(c) for c in combos}) == 6


def test_empty_duplicate_and_oversized_grids_are_refused():
    with pytest.raises(ShipyardError, match="nothing to sweep: give --grid"):
        check_grid({})
    with pytest.raises(ShipyardError, match="train.lr: the value 0.001 is given twice"):
        check_grid({"train.lr": [0.001, 1e-3]})
    big = {"train.lr": list(range(9)), "train.dropout": [x / 10 for x in range(8)]}
    with pytest.raises(
        ShipyardError, match=f"72 candidates \\(9 × 8\\); a sweep runs at most {MAX_CANDIDATES}"
    ):
        check_grid(big)
    check_grid({"train.lr": list(range(8)), "train.dropout": [x / 10 for x in range(8)]})  # 64: allowed


@pytest.mark.parametrize(
    "key, said",
    [
        ("model.hidden", "unknown key 'model.hidden' in params.yaml (did you mean train.hidden?)"),
        ("train.hiden", "unknown key 'train.hiden' in section 'train' (did you mean train.hidden?)"),
        ("evaluate.treshold", "did you mean evaluate.thresholds?"),
        ("sweep.workers", "the sweep section itself"),
    ],
)
def test_unknown_keys_are_named_with_a_suggestion(key, said):
    with pytest.raises(ShipyardError) as raised:
        check_key(key, "--grid")
    assert str(raised.value).startswith(f"--grid {key}: ")
    assert said in str(raised.value)


@pytest.mark.parametrize(
    "key", ["train.lr", "task", "validate.contract", "evaluate.thresholds.accuracy", "drift.critical.psi"]
)
def test_known_keys_pass(key):
    check_key(key, "--grid")


def test_plan_names_candidates_and_copies_untracked_inputs(project):
    Path("data.csv").write_text("a,label\n1,x\n", encoding="utf-8")
    Path("dvc.lock").write_text("schema: '2.0'\nstages: {}\n", encoding="utf-8")
    Path("params.yaml").write_text(
        Path("params.yaml").read_text().replace("data/raw/breast_cancer.csv", "data.csv"), encoding="utf-8"
    )
    plan = make_plan(["train.lr=0.01,0.03", "train.hidden=[8],[16]"], ["train.epochs=2"], workers=8)
    assert [c["values"] for c in plan.candidates] == [
        {"train.lr": 0.01, "train.hidden": [8]},
        {"train.lr": 0.01, "train.hidden": [16]},
        {"train.lr": 0.03, "train.hidden": [8]},
        {"train.lr": 0.03, "train.hidden": [16]},
    ]
    assert [c["name"] for c in plan.candidates] == [f"{plan.sweep_id}-{n}" for n in range(1, 5)]
    assert plan.sets == {"train.epochs": 2}
    assert plan.copy_paths == ["dvc.lock", "data.csv"]  # neither git nor DVC brings them to an experiment
    assert plan.workers == 4  # no more workers than candidates
    assert plan.metric == "f1_macro" and plan.higher_is_better
    assert any("data.csv" in note and "dvc add" in note for note in plan.notes)


def test_plan_takes_the_params_sweep_section(project):
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["sweep"] = {"grid": {"train.lr": [0.1, 0.2]}, "metric": "log_loss", "workers": 1, "address": None}
    Path("params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    plan = make_plan(["train.dropout=0.0,0.5"], [])
    assert plan.keys == ["train.lr", "train.dropout"] and len(plan.candidates) == 4
    assert plan.metric == "log_loss" and not plan.higher_is_better
    assert plan.workers == 1 and plan.address is None
    assert plan.copy_paths == []  # the default data is a dvc.yaml output: DVC restores it itself


@pytest.mark.parametrize(
    "grid, sets, said",
    [
        (["train.lr=0.01,-1"], [], "candidate train.lr=-1: params.yaml with --set: train.lr: "),
        (["train.model=mlp,gpt"], [], "candidate train.model='gpt': "),
        (["train.lr=0.1"], ["train.lr=0.2"], "train.lr is both in --grid and --set"),
        (["train.lr=0.1"], ["train.epohcs=2"], "--set train.epohcs: unknown key"),
    ],
)
def test_bad_candidates_fail_before_anything_is_written(project, grid, sets, said):
    before = Path("params.yaml").read_bytes()
    with pytest.raises(ShipyardError, match=said.replace("(", r"\(").replace("+", r"\+")):
        make_plan(grid, sets)
    assert Path("params.yaml").read_bytes() == before
    assert not Path("reports").exists()


def test_the_metric_must_be_one_evaluate_writes(project):
    with pytest.raises(
        ShipyardError, match="'f1' is not a metric of reports/metrics.json .did you mean f1_macro"
    ):
        make_plan(["train.lr=0.1"], [], metric="f1")
    Path("reports").mkdir()
    Path("reports/metrics.json").write_text(
        '{"accuracy": 0.9, "rows": 10, "per_class": {}}', encoding="utf-8"
    )
    with pytest.raises(ShipyardError, match=r"\(one of accuracy\)"):
        make_plan(["train.lr=0.1"], [], metric="f1_macro")


def test_experiments_need_a_git_commit(project):
    shutil.rmtree(".git")
    with pytest.raises(ShipyardError, match="not a git repository; .*git init && git add -A && git commit"):
        make_plan(["train.lr=0.1"], [])
    subprocess.run(["git", "init", "-q"], check=True)
    with pytest.raises(ShipyardError, match="no git commit yet"):
        make_plan(["train.lr=0.1"], [])


def test_the_command_fails_with_one_line_and_runs_nothing(project):
    app = typer.Typer()
    app.command()(sweep)
    app.command("noop")(lambda: None)  # two commands: typer keeps `sweep` as a subcommand
    before = Path("params.yaml").read_bytes()
    result = CliRunner().invoke(app, ["sweep", "--grid", "model.hidden=64,128"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines == [
        "error: --grid model.hidden: unknown key 'model.hidden' in params.yaml (did you mean train.hidden?)"
    ]
    assert Path("params.yaml").read_bytes() == before
    assert not Path("reports").exists()
    result = CliRunner().invoke(app, ["sweep"])
    assert result.exit_code == 1 and "nothing to sweep" in result.output


def test_values_reach_dvc_as_they_were_parsed(tmp_path):
    """candidate_args' --set-param values, read back by DVC's own code (as `dvc exp run` applies them)."""
    from dvc.utils.hydra import apply_overrides
    from ruamel.yaml import YAML

    from flows.sweep import candidate_args

    values = [0.001, 1e-05, 64, -3, [64, 32], [], "true", "1", None, True, {"accuracy": 0.9}]
    values += ["it's", "a \\ b", "ends \\", "a\\'b", "x,y=z: w"]
    path = tmp_path / "params.yaml"
    path.write_text("k: {v0: 0}\n", encoding="utf-8")  # the other keys are new: ++ adds them
    args = candidate_args("exp-1", {f"k.v{i}": v for i, v in enumerate(values)}, ["data.csv"])
    assert args[:8] == [
        "--wait-for-lock",
        "exp",
        "run",
        "--temp",
        "--name",
        "exp-1",
        "--copy-paths",
        "data.csv",
    ]
    assert args[-1] == "evaluate"
    overrides = [arg for flag, arg in zip(args, args[1:], strict=False) if flag == "--set-param"]
    apply_overrides(path, overrides)
    written = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))["k"]  # YAML 1.2, as DVC
    assert [written[f"v{i}"] for i in range(len(values))] == values


def row(name, score, blessed=True, status="ok"):
    return {
        "name": name,
        "status": status,
        "blessed": blessed,
        "metrics": {"f1_macro": score, "log_loss": score},
    }


def test_the_best_is_the_blessed_one_with_the_best_metric():
    from flows.sweep import choose_best

    rows = [row("a", 0.9), row("b", 0.95, blessed=False), row("c", 0.93), row("d", 0.99, status="failed")]
    rows.append(row("e", None))
    assert choose_best(rows, "f1_macro", higher_is_better=True)["name"] == "c"
    assert choose_best(rows, "log_loss", higher_is_better=False)["name"] == "a"
    assert choose_best([row("x", 0.9), row("y", 0.9)], "f1_macro", True)["name"] == "x"  # a tie: grid order
    assert choose_best([row("a", 0.9, blessed=False)], "f1_macro", True) is None


def test_a_failed_candidate_reports_the_stage_error():
    from flows.sweep import failure_lines

    output = (
        "Running stage 'train':\n> python -m tasks.train\n"
        "WARNING: No file hash info found for 'x'. It won't be created.\n"
        "error: train.hidden: widths must be positive\n"
        "ERROR: failed to reproduce 'train': failed to run: python -m tasks.train, exited with 1\n"
    )
    assert failure_lines(output) == (
        "error: train.hidden: widths must be positive | "
        "ERROR: failed to reproduce 'train': failed to run: python -m tasks.train, exited with 1"
    )
