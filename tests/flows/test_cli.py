"""`shipyard run` on bad input: one clear line, non-zero exit, and the last good artifacts untouched.

The bad-data matrix against an owned contract is tests/flows/test_bad_data.py; these are the rest."""

from pathlib import Path

import pytest

from tests.project import dvc, image_folder, shipyard, snapshot, text_frame


def write(project: Path, name: str, content: bytes | str) -> str:
    data = content.encode() if isinstance(content, str) else content
    (project / name).write_bytes(data)
    return name


def empty_class_folder(project: Path) -> str:
    image_folder(project / "photos", per_class=4)
    (project / "photos/empty").mkdir()
    return "photos"


def texts_with(project: Path, change) -> str:
    frame = text_frame(rows=60).rename(columns={"kind": "label"})
    change(frame)
    frame.to_csv(project / "texts.csv", index=False)
    return "texts.csv"


def single_example(frame) -> None:
    frame.loc[0, "label"] = "rare"


def empty_texts(frame) -> None:
    frame["message"] = ""


BAD_INPUTS = {
    "missing file": (lambda p: "nowhere.csv", ["nowhere.csv", "not found"]),
    "target missing": (lambda p: write(p, "notarget.csv", "a,b\n1,2\n3,4\n"), ["'label'", "not found"]),
    "empty class folder": (empty_class_folder, ["photos/empty", "no images"]),
    "text column of numbers": (
        lambda p: texts_with(p, lambda f: f.__setitem__("message", range(len(f)))),
        ["'message'", "numbers"],
        ["--text-column", "message"],
    ),
    "all-empty text column": (
        lambda p: texts_with(p, empty_texts),
        ["'message'", "empty"],
        ["--text-column", "message"],
    ),
    "label with a single example": (lambda p: texts_with(p, single_example), ["'rare'", "1 row"]),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_data_fails_cleanly_and_keeps_last_good_model(trained_project, prefect_server, case):
    make_file, expected, *extra = BAD_INPUTS[case]
    before = snapshot(trained_project)
    source = make_file(trained_project)
    args = ["--data", source, "--target", "label", *(extra[0] if extra else [])]
    result = shipyard(trained_project, "run", *args, PREFECT_API_URL=prefect_server)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, output
    for word in expected:
        assert word in error_lines[0], error_lines[0]
    assert snapshot(trained_project) == before  # params.yaml is put back too


@pytest.mark.parametrize(
    "setting, expected",
    [
        ("train.epochz=5", "unknown key 'train.epochz'"),
        ("train.epochs=-3", "train.epochs"),
        ("nosuch.section=1", "unknown key 'nosuch'"),
        ("train.lr=fast", "train.lr"),
    ],
)
def test_bad_params_rejected_before_any_work(trained_project, setting, expected):
    before = snapshot(trained_project)
    result = shipyard(trained_project, "run", "--set", setting)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert expected in result.stderr
    assert "Starting temporary server" not in result.stdout + result.stderr  # failed before Prefect started
    assert snapshot(trained_project) == before  # params.yaml included: nothing written


def test_flow_run_leaves_dvc_up_to_date(trained_project):
    """The flow records stages in dvc.lock exactly as `dvc repro` would: nothing left to reproduce."""
    shipyard(trained_project, "run", "--data", "good.csv", "--target", "label")
    status = dvc(trained_project, "status")
    assert status.returncode == 0
    assert "up to date" in status.stdout, status.stdout


def test_a_model_that_is_not_blessed_exits_3_and_keeps_production(trained_project, prefect_server):
    before = snapshot(trained_project)
    setting = "evaluate.thresholds.accuracy=1.01"
    result = shipyard(trained_project, "run", "--set", setting, PREFECT_API_URL=prefect_server)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "not blessed" in result.stderr and "accuracy" in result.stderr
    assert snapshot(trained_project) == before  # production, model, export and params.yaml as they were
