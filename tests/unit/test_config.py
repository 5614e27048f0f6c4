"""params.yaml: validation errors name the key path; --set overrides edit the file like `dvc exp run -S`."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from tasks.config import (
    Params,
    TrainParams,
    apply_overrides,
    load_params,
    parse_assignment,
    parse_params,
    read_yaml,
)
from tasks.errors import ShipyardError

PARAMS_TEXT = """\
# top comment: kept
ingest:
  source: data/raw/x.csv   # where the data is
  target: label
  table: null              # SQL only
  query: null

train:
  hidden: [16, 8]
  epochs: 60   # how long
  lr: 0.003
  device: cpu

evaluate:
  thresholds:
    accuracy: 0.8
"""


@pytest.fixture
def params_file(project: Path) -> Path:
    """params.yaml in the cwd, so apply_overrides' default `out` is this same file."""
    path = project / "params.yaml"
    path.write_text(PARAMS_TEXT, encoding="utf-8")
    return path


# ---- parse_params -------------------------------------------------------------------------------------


def test_empty_params_give_defaults() -> None:
    for raw in (None, {}):
        params = parse_params(raw)
        assert params == Params()
        assert params.train.epochs == TrainParams().epochs
        assert params.validate_params.suite is None


def test_validate_section_is_read_by_its_yaml_name() -> None:
    params = parse_params({"validate": {"range_margin": 0.25}})
    assert params.validate_params.range_margin == 0.25


@pytest.mark.parametrize(
    ("raw", "key_path"),
    [
        ({"trian": {"epochs": 5}}, "trian"),
        ({"train": {"epoch": 5}}, "train.epoch"),
        ({"validate": {"suitee": "x.json"}}, "validate.suitee"),
        (
            {"validate": {"contract": {"columns": {"size": {"type": "numeric", "mni": 0}}}}},
            "validate.contract.columns.size.mni",
        ),
    ],
)
def test_unknown_key_names_its_path(raw: dict, key_path: str) -> None:
    with pytest.raises(ShipyardError, match=rf"unknown key '{key_path}'"):
        parse_params(raw, "my-params.yaml")


@pytest.mark.parametrize(
    ("raw", "key_path", "shown"),
    [
        ({"train": {"epochs": -1}}, "train.epochs", "-1"),
        ({"train": {"epochs": "many"}}, "train.epochs", "'many'"),
        ({"train": {"hidden": "wide"}}, "train.hidden", "'wide'"),
        ({"train": {"device": "tpu"}}, "train.device", "'tpu'"),
        ({"ingest": {"val_fraction": 1.5}}, "ingest.val_fraction", "1.5"),
        ({"serve": {"port": 70000}}, "serve.port", "70000"),
        ({"export": {"opset": 9}}, "export.opset", "9"),
    ],
)
def test_bad_value_names_path_and_value(raw: dict, key_path: str, shown: str) -> None:
    with pytest.raises(ShipyardError) as info:
        parse_params(raw, "my-params.yaml")
    message = str(info.value)
    assert message.startswith("my-params.yaml: ")
    assert f"{key_path}:" in message
    assert f"(got {shown})" in message


def test_every_bad_key_is_reported_at_once() -> None:
    with pytest.raises(ShipyardError) as info:
        parse_params({"train": {"epochs": 0, "lr": -1}, "bogus": 1})
    message = str(info.value)
    assert "train.epochs" in message and "train.lr" in message and "unknown key 'bogus'" in message


def test_fractions_that_leave_no_training_rows_are_refused() -> None:
    with pytest.raises(ShipyardError, match=r"ingest: .*val_fraction \+ test_fraction must be below 0.9"):
        parse_params({"ingest": {"val_fraction": 0.5, "test_fraction": 0.45}})


# ---- read_yaml / load_params --------------------------------------------------------------------------


def test_load_params_reads_the_file(params_file: Path) -> None:
    params = load_params(params_file)
    assert params.train.hidden == [16, 8] and params.train.device == "cpu"
    assert params.ingest.table is None and params.ingest.target == "label"


def test_load_params_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("train:\n  epochs: zero\n", encoding="utf-8")
    with pytest.raises(ShipyardError, match=rf"^{re.escape(str(path))}: train.epochs:"):
        load_params(path)


def test_read_yaml_errors(tmp_path: Path) -> None:
    with pytest.raises(ShipyardError, match="params file not found"):
        read_yaml(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n", encoding="utf-8")
    with pytest.raises(ShipyardError, match="not valid YAML"):
        read_yaml(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ShipyardError, match="mapping of sections"):
        read_yaml(listed)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# only a comment\n", encoding="utf-8")
    assert read_yaml(empty) == {}


# ---- parse_assignment ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "keys", "value"),
    [
        ("train.epochs=5", ["train", "epochs"], 5),
        ("train.lr=0.01", ["train", "lr"], 0.01),
        ("train.hidden=[8, 4]", ["train", "hidden"], [8, 4]),
        ("ingest.table=null", ["ingest", "table"], None),
        ("ingest.table=", ["ingest", "table"], None),
        ("train.device=cpu", ["train", "device"], "cpu"),
        (" ingest.source = data/x.csv", ["ingest", "source"], "data/x.csv"),
        ("ingest.query=SELECT * FROM t WHERE a=1", ["ingest", "query"], "SELECT * FROM t WHERE a=1"),
    ],
)
def test_parse_assignment(text: str, keys: list[str], value: object) -> None:
    assert parse_assignment(text) == (keys, value)


@pytest.mark.parametrize("text", ["train.epochs", "=5", "  =5"])
def test_parse_assignment_refuses_malformed(text: str) -> None:
    with pytest.raises(ShipyardError, match="expected KEY.PATH=VALUE"):
        parse_assignment(text)


# ---- apply_overrides ----------------------------------------------------------------------------------


def test_override_is_written_and_comments_kept(params_file: Path) -> None:
    params = apply_overrides(params_file, [parse_assignment("train.epochs=5")], out=params_file)
    assert params.train.epochs == 5
    text = params_file.read_text(encoding="utf-8")
    assert re.search(r"^  epochs: 5 +# how long$", text, re.MULTILINE)
    assert "# top comment: kept" in text and "# where the data is" in text
    # everything else is untouched, line for line
    assert [line for line in text.splitlines() if "epochs" not in line] == [
        line for line in PARAMS_TEXT.splitlines() if "epochs" not in line
    ]
    assert load_params(params_file).train.epochs == 5


def test_override_can_add_a_key_and_a_section(params_file: Path) -> None:
    params = apply_overrides(
        params_file,
        [parse_assignment("train.patience=3"), parse_assignment("serve.port=9000")],
        out=params_file,
    )
    assert params.train.patience == 3 and params.serve.port == 9000
    reread = read_yaml(params_file)
    assert reread["train"]["patience"] == 3 and reread["serve"] == {"port": 9000}


def test_override_to_another_file_leaves_the_source_alone(params_file: Path, tmp_path: Path) -> None:
    before = params_file.read_bytes()
    out = tmp_path / "effective.yaml"
    apply_overrides(params_file, [parse_assignment("train.lr=0.1")], out=out)
    assert params_file.read_bytes() == before
    assert read_yaml(out)["train"]["lr"] == 0.1


@pytest.mark.parametrize(
    "assignment",
    [
        "train.epochs=-1",  # bad value
        "train.epochs=many",  # wrong type
        "train.epoch=5",  # unknown nested key
        "trian.epochs=5",  # unknown section
        "train.epochs.max=5",  # not a section
        "ingest.val_fraction=0.8",  # cross-field rule
    ],
)
def test_invalid_override_writes_nothing(params_file: Path, tmp_path: Path, assignment: str) -> None:
    before = params_file.read_bytes()
    stat = params_file.stat()
    other = tmp_path / "other.yaml"
    with pytest.raises(ShipyardError) as info:
        apply_overrides(params_file, [parse_assignment("train.lr=0.5"), parse_assignment(assignment)])
    assert assignment.split("=")[0].split(".")[0] in str(info.value)
    with pytest.raises(ShipyardError):
        apply_overrides(params_file, [parse_assignment(assignment)], out=params_file)
    with pytest.raises(ShipyardError):
        apply_overrides(params_file, [parse_assignment(assignment)], out=other)
    assert params_file.read_bytes() == before
    assert params_file.stat().st_mtime_ns == stat.st_mtime_ns
    assert not other.exists()
    assert not (tmp_path / "params.yaml.tmp").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_unknown_override_error_names_the_key_path(params_file: Path) -> None:
    with pytest.raises(ShipyardError, match=r"unknown key 'train.epoch'"):
        apply_overrides(params_file, [parse_assignment("train.epoch=5")], out=params_file)
    with pytest.raises(ShipyardError, match=r"'train.epochs' is not a section"):
        apply_overrides(params_file, [parse_assignment("train.epochs.max=5")], out=params_file)


def test_unchanged_params_are_not_rewritten(params_file: Path) -> None:
    os.utime(params_file, ns=(1_000_000_000, 1_000_000_000))
    before = params_file.stat()
    params = apply_overrides(params_file, [parse_assignment("train.epochs=60")], out=params_file)
    assert params.train.epochs == 60
    after = params_file.stat()
    assert params_file.read_text(encoding="utf-8") == PARAMS_TEXT
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)


def test_null_stays_null(params_file: Path) -> None:
    apply_overrides(params_file, [parse_assignment("ingest.source=other.csv")], out=params_file)
    text = params_file.read_text(encoding="utf-8")
    assert "  table: null              # SQL only" in text
    assert "  query: null\n" in text
    apply_overrides(params_file, [parse_assignment("ingest.table=rows")], out=params_file)
    assert read_yaml(params_file)["ingest"]["table"] == "rows"
    apply_overrides(params_file, [parse_assignment("ingest.table=null")], out=params_file)
    text = params_file.read_text(encoding="utf-8")
    assert "table: null" in text
    assert read_yaml(params_file)["ingest"]["table"] is None


def test_override_in_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("", encoding="utf-8")
    params = apply_overrides(path, [parse_assignment("train.epochs=2")], out=path)
    assert params.train.epochs == 2 and read_yaml(path) == {"train": {"epochs": 2}}


def test_override_of_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ShipyardError, match="params file not found"):
        apply_overrides(tmp_path / "absent.yaml", [parse_assignment("train.epochs=2")], out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_exponent_float_override_is_written_as_a_number(params_file: Path) -> None:
    from ruamel.yaml import YAML

    apply_overrides(params_file, [parse_assignment("train.lr=1e-3")], out=params_file)
    written = YAML(typ="safe").load(params_file.read_text(encoding="utf-8"))
    assert isinstance(written["train"]["lr"], float) and written["train"]["lr"] == pytest.approx(1e-3)
    assert yaml.safe_load(params_file.read_text(encoding="utf-8"))["train"]["lr"] != "1e-3"
