"""`shipyard run` on bad input: one clear line, non-zero exit, and the last good artifacts untouched."""

import hashlib
from pathlib import Path

import pytest

from tests.project import dvc, shipyard, tabular_frame

PROTECTED = [
    "registry/production.json",
    "models/model.pt",
    "export/model.onnx",
    "export/manifest.json",
    "reports/metrics.json",
    "params.yaml",
]


def snapshot(project: Path) -> dict[str, str]:
    return {name: hashlib.sha256((project / name).read_bytes()).hexdigest() for name in PROTECTED}


def write(project: Path, name: str, content: bytes | str) -> str:
    data = content.encode() if isinstance(content, str) else content
    (project / name).write_bytes(data)
    return name


def single_class(project: Path) -> str:
    frame = tabular_frame()
    frame["label"] = "low"
    frame.to_csv(project / "one_class.csv", index=False)
    return "one_class.csv"


def text_in_numbers(project: Path) -> str:
    frame = tabular_frame().astype({"dose_mg": object})
    frame.loc[7, "dose_mg"] = "twelve"
    frame.to_csv(project / "typo.csv", index=False)
    return "typo.csv"


BAD_INPUTS = {
    "missing file": (lambda p: "nowhere.csv", ["nowhere.csv", "not found"]),
    "unreadable file": (lambda p: write(p, "binary.csv", b"\xff\xfe\x00\x81" * 64), ["binary.csv", "UTF-8"]),
    "empty file": (lambda p: write(p, "empty.csv", b""), ["empty.csv", "empty"]),
    "header only": (lambda p: write(p, "header.csv", "a,b,label\n"), ["header.csv", "no data rows"]),
    "target missing": (lambda p: write(p, "notarget.csv", "a,b\n1,2\n3,4\n"), ["'label'", "not found"]),
    "single class": (single_class, ["1 class"]),
    "text in a numeric column": (text_in_numbers, ["dose_mg", "twelve"]),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_data_fails_cleanly_and_keeps_last_good_model(trained_project, prefect_server, case):
    make_file, expected = BAD_INPUTS[case]
    before = snapshot(trained_project)
    source = make_file(trained_project)
    result = shipyard(
        trained_project, "run", "--data", source, "--target", "label", PREFECT_API_URL=prefect_server
    )
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
