"""`shipyard remote add` and DVC push/pull against moto's S3 server on loopback.

The round trip: run the pipeline, add the remote, commit, `dvc push`; `git clone`, `dvc pull`, nothing to
reproduce; then `dvc repro --force` in the clone gives the same metrics and bit-identical ONNX outputs on
the test split. Deterministic settings: ingest.seed (split), train.seed (torch and numpy), CPU training,
one intra-op thread (OMP_NUM_THREADS=MKL_NUM_THREADS=1) and onnxruntime on one thread.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.remote_cli import remote_app
from tasks.config import apply_overrides, parse_assignment
from tests.project import BIN, FAST, env, free_port, make_project, tabular_frame

BUCKET = "shipyard-test"
SECRET = "s3cr3t-never-committed"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIATESTONLY", "AWS_SECRET_ACCESS_KEY": SECRET}
DETERMINISTIC = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]

# The logits of export/model.onnx on the test split, encoded by models/model.pt, on one ORT thread.
ONNX_LOGITS = """
import sys, numpy as np, onnxruntime as ort
from tasks.families import load_split
from tasks.model import load_model
trained = load_model("models/model.pt")
inputs = trained.family.encode(load_split("test", trained.task), trained.prep)
options = ort.SessionOptions(); options.intra_op_num_threads = 1; options.inter_op_num_threads = 1
session = ort.InferenceSession("export/model.onnx", options, providers=["CPUExecutionProvider"])
names = [i.name for i in session.get_inputs()]
np.save(sys.argv[1], session.run(None, dict(zip(names, inputs)))[0])
"""


def run(cwd: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(args), cwd=cwd, env=env(**CREDENTIALS, **DETERMINISTIC, **extra), capture_output=True, text=True
    )


def dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    result = run(cwd, str(BIN / "dvc"), *args)
    assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def remote(cwd: Path, monkeypatch: pytest.MonkeyPatch, *args: str):
    """`shipyard remote ...` in-process (the sub-app itself, so it does not depend on its registration)."""
    monkeypatch.chdir(cwd)
    return CliRunner().invoke(remote_app, list(args))


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 server on a free loopback port with one empty bucket; stopped after the module."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=SECRET,
        )
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client
    finally:
        server.stop()


@pytest.fixture
def dvc_project(tmp_path: Path) -> Path:
    """A bare git + DVC project (no run) for the CLI's own checks."""
    return make_project(tmp_path / "p")


def test_add_writes_url_and_endpoint_to_committed_config(dvc_project, monkeypatch):
    result = remote(dvc_project, monkeypatch, "add", "s3://bucket/x", "--endpoint-url", "http://minio:9000")
    assert result.exit_code == 0, result.output
    config = (dvc_project / ".dvc/config").read_text()
    assert "url = s3://bucket/x" in config
    assert "endpointurl = http://minio:9000" in config
    assert "remote = storage" in config  # the default
    assert "analytics = false" in config  # the rest of the config is kept

    again = remote(dvc_project, monkeypatch, "add", "s3://bucket/x", "--endpoint-url", "http://minio:9000")
    assert again.exit_code == 0 and "unchanged" in again.output
    other = remote(dvc_project, monkeypatch, "add", "s3://bucket/y")
    assert other.exit_code == 1 and "--force" in other.output
    assert (dvc_project / ".dvc/config").read_text() == config
    forced = remote(dvc_project, monkeypatch, "add", "s3://bucket/y", "--force")
    assert forced.exit_code == 0, forced.output
    assert "url = s3://bucket/y" in (dvc_project / ".dvc/config").read_text()
    assert "endpointurl" not in (dvc_project / ".dvc/config").read_text()


@pytest.mark.parametrize(
    "args, said",
    [
        (["http://bucket/x"], "expected s3://"),
        (["s3://"], "bucket name is empty"),
        (["s3:///path"], "bucket name is empty"),
        (["s3://My_Bucket/x"], "not a valid bucket name"),
        (["s3://b/x"], "not a valid bucket name"),
        (["s3://bucket/x", "--endpoint-url", "minio:9000"], "expected http(s)://HOST"),
        (["s3://bucket/x", "--endpoint-url", "ftp://minio"], "expected http(s)://HOST"),
        (["s3://bucket/x", "--endpoint-url", "http://minio:99999"], "--endpoint-url"),
        (["s3://bucket/x", "--endpoint-url", "http://key:secret@minio:9000"], "would be committed"),
        (["s3://bucket/x", "--access-key-id", "AKIA"], "go together"),
        (["s3://bucket/x", "--name", "my remote"], "--name"),
    ],
)
def test_bad_input_is_one_error_line_and_leaves_config(dvc_project, monkeypatch, args, said):
    before = (dvc_project / ".dvc/config").read_bytes()
    result = remote(dvc_project, monkeypatch, "add", *args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and said in lines[0], result.output
    assert "Traceback" not in result.output
    assert (dvc_project / ".dvc/config").read_bytes() == before


def test_outside_a_dvc_project_says_so(tmp_path, monkeypatch):
    result = remote(tmp_path, monkeypatch, "add", "s3://bucket/x")
    assert result.exit_code == 1 and "not in a DVC project" in result.output


def test_credentials_options_go_to_local_config_only(dvc_project, monkeypatch):
    keys = ["--access-key-id", "AKIA1", "--secret-access-key", SECRET]
    result = remote(dvc_project, monkeypatch, "add", "s3://bucket/x", *keys)
    assert result.exit_code == 0, result.output
    assert SECRET not in (dvc_project / ".dvc/config").read_text()
    assert SECRET in (dvc_project / ".dvc/config.local").read_text()
    ignored = subprocess.run(["git", "check-ignore", "-q", ".dvc/config.local"], cwd=dvc_project)
    assert ignored.returncode == 0  # never committed by `git add -A`
    listed = remote(dvc_project, monkeypatch, "list")
    assert "* storage  s3://bucket/x" in listed.output and ".dvc/config.local" in listed.output
    assert SECRET not in listed.output

    removed = remote(dvc_project, monkeypatch, "remove")
    assert removed.exit_code == 0, removed.output
    assert "storage" not in (dvc_project / ".dvc/config").read_text()
    assert SECRET not in (dvc_project / ".dvc/config.local").read_text()


@pytest.mark.slow
def test_push_clone_pull_then_reproduce_bit_identical(tmp_path, monkeypatch, s3_endpoint):
    endpoint, client = s3_endpoint
    origin = make_project(tmp_path / "origin")
    tabular_frame().to_csv(origin / "data.csv", index=False)
    settings = [parse_assignment(s) for s in ["ingest.source=data.csv", "ingest.target=label", *FAST]]
    apply_overrides(origin / "params.yaml", settings, out=origin / "params.yaml")
    dvc(origin, "repro")

    added = remote(origin, monkeypatch, "add", f"s3://{BUCKET}/x", "--endpoint-url", endpoint)
    assert added.exit_code == 0, added.output
    assert run(origin, *GIT, "add", "-A").returncode == 0
    assert run(origin, *GIT, "commit", "-qm", "run").returncode == 0
    committed = run(origin, "git", "grep", "-I", "-l", SECRET, "HEAD")
    assert committed.stdout == "", f"credentials committed in {committed.stdout}"
    assert "AKIA" not in (origin / ".dvc/config").read_text()

    dvc(origin, "push")
    stored = client.list_objects_v2(Bucket=BUCKET, Prefix="x/")
    assert stored["KeyCount"] > 0

    clone = tmp_path / "clone"
    assert run(tmp_path, "git", "clone", "-q", str(origin), str(clone)).returncode == 0
    assert not (clone / "models/model.pt").exists()
    dvc(clone, "pull")
    assert (clone / "models/model.pt").read_bytes() == (origin / "models/model.pt").read_bytes()
    assert "Data and pipelines are up to date" in dvc(clone, "status").stdout
    nothing = dvc(clone, "repro")
    assert "Running stage" not in nothing.stdout, nothing.stdout

    pulled_metrics = json.loads((clone / "reports/metrics.json").read_text())
    logits = run(clone, str(BIN / "python"), "-c", ONNX_LOGITS, str(tmp_path / "pulled.npy"))
    assert logits.returncode == 0, logits.stderr
    dvc(clone, "repro", "--force")
    assert json.loads((clone / "reports/metrics.json").read_text()) == pulled_metrics
    logits = run(clone, str(BIN / "python"), "-c", ONNX_LOGITS, str(tmp_path / "forced.npy"))
    assert logits.returncode == 0, logits.stderr
    pulled, forced = np.load(tmp_path / "pulled.npy"), np.load(tmp_path / "forced.npy")
    assert pulled.shape[0] == pulled_metrics["rows"]
    assert np.array_equal(pulled, forced)  # bit-identical, not merely close
