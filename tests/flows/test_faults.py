"""Faults: an interrupted `dvc repro` (Ctrl+C, kill -9) recovers; a corrupted DVC cache object is caught.

The interrupt is sent to the whole process group of `dvc repro`, as a terminal does: Ctrl+C sends SIGINT
to the foreground group and closing it kills the group, so the stage's own process (`python -m
tasks.train`) gets it too. Killing only DVC's process would leave the stage running on as an orphan.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tasks.config import apply_overrides, parse_assignment
from tests.project import BIN, FAST, env, make_project, shipyard, tabular_frame

# `dvc repro` with SIGINT at its default: a process started in the background of a non-interactive
# shell inherits SIGINT ignored, which Ctrl+C in a terminal never meets.
WITH_DEFAULT_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)
UP_TO_DATE = "Data and pipelines are up to date."


def set_params(project: Path, *assignments: str) -> None:
    params = project / "params.yaml"
    apply_overrides(params, [parse_assignment(text) for text in assignments], out=params)


def dvc(project: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "dvc"), *args], cwd=project, env=env(), capture_output=True, text=True, timeout=timeout
    )


def copy_project(source: Path, target: Path) -> Path:
    """A copy with DVC's cache and git history, without its machine-local state (.dvc/tmp)."""

    def machine_local(folder: str, names: list[str]) -> list[str]:
        return ["tmp"] if Path(folder).name == ".dvc" else []

    shutil.copytree(source, target, symlinks=True, ignore=machine_local)
    return target


@pytest.fixture(scope="module")
def validated(tmp_path_factory) -> Path:
    """Ingest and validate done by `dvc repro validate` on a 300-row table: train is next."""
    project = make_project(tmp_path_factory.mktemp("faults") / "validated")
    tabular_frame().to_csv(project / "data.csv", index=False)
    set_params(project, "ingest.source=data.csv", "ingest.target=label", *FAST)
    result = dvc(project, "repro", "validate")
    assert result.returncode == 0, result.stdout + result.stderr
    return project


def read_rwlock(project: Path) -> dict:
    path = project / ".dvc/tmp/rwlock"
    return json.loads(path.read_text()) if path.exists() else {}


def read_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def stage_outs(project: Path) -> set[str]:
    stages = read_yaml(project / "dvc.yaml")["stages"]
    return {str(project / out) for stage in stages.values() for out in stage.get("outs", [])}


def lock_is_free(project: Path) -> bool:
    """DVC's repo lock (.dvc/tmp/lock, zc.lockfile as DVC takes it) can be taken now, without waiting."""
    import zc.lockfile

    try:
        lock = zc.lockfile.LockFile(str(project / ".dvc/tmp/lock"))
    except zc.lockfile.LockError:
        return False
    lock.close()
    return True


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def interrupt_training(project: Path, sig: signal.Signals) -> tuple[subprocess.CompletedProcess, int]:
    """Start `dvc repro`, wait until the train stage has written a checkpoint, send `sig` to the group."""
    command = [sys.executable, "-c", WITH_DEFAULT_SIGINT, str(BIN / "dvc"), "repro"]
    process = subprocess.Popen(
        command, cwd=project, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    checkpoint = project / "models/checkpoints/last.pt"
    deadline = time.monotonic() + 180
    while not checkpoint.exists():
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "train never wrote a checkpoint"
        time.sleep(0.1)
    stage = psutil.Process(process.pid).children(recursive=True)
    assert any("tasks.train" in " ".join(p.cmdline()) for p in stage), [p.cmdline() for p in stage]
    os.killpg(process.pid, sig)
    output, _ = process.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while not all(gone(p) for p in stage):
        assert time.monotonic() < deadline, "the stage's process outlived the interrupt"
        time.sleep(0.1)
    return subprocess.CompletedProcess(command, process.returncode, output, ""), process.pid


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_interrupted_repro_recovers_on_the_next_run(validated, tmp_path, sig):
    project = copy_project(validated, tmp_path / "p")
    set_params(project, "train.epochs=100000", "train.patience=100000")  # still training when interrupted
    interrupted, pid = interrupt_training(project, sig)

    assert interrupted.returncode != 0
    if sig == signal.SIGINT:  # DVC ignores SIGINT while the stage runs, then reports the stage's failure
        assert "failed to reproduce 'train'" in interrupted.stdout, interrupted.stdout
        assert not any(read_rwlock(project).values()), read_rwlock(project)
    else:  # killed: DVC's rwlock still holds the dead process's entries
        assert {info["pid"] for info in read_rwlock(project)["write"].values()} == {pid}
    assert not (project / "models/model.pt").exists()  # nothing half-written where a reader looks
    assert "train" not in read_yaml(project / "dvc.lock")["stages"]  # the unfinished run is not recorded
    assert lock_is_free(project)  # the repo lock died with its process: a new `dvc repro` can start at once

    set_params(project, *FAST)
    recovered = dvc(project, "repro")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert "Running stage 'train'" in recovered.stdout
    assert "Running stage 'ingest'" not in recovered.stdout  # what had finished is not redone
    assert dvc(project, "status").stdout.strip() == UP_TO_DATE
    assert lock_is_free(project)

    # DVC drops a dead process's entry when a writer of that path comes; what stays is a read of a path
    # no stage writes (source files, params.yaml), which can block nothing.
    left = read_rwlock(project)
    assert not left.get("write"), left
    outs = stage_outs(project)
    for path, readers in left.get("read", {}).items():
        assert {r["pid"] for r in readers} == {pid}, (path, readers)
        assert not any(path == out or path.startswith(out + "/") for out in outs), path


# --- a corrupted object in the DVC cache ------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(validated, tmp_path_factory) -> Path:
    """Ingest and validate reproduced, pushed to a local DVC remote and committed: the last good state."""
    project = copy_project(validated, tmp_path_factory.mktemp("built") / "p")
    remote = project.parent / "remote"
    for args in (["remote", "add", "-d", "store", str(remote)], ["push"]):
        result = dvc(project, *args)
        assert result.returncode == 0, result.stdout + result.stderr
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "run"], cwd=project, check=True)
    return project


def verify_cache(project: Path, *args: str) -> subprocess.CompletedProcess:
    """`shipyard cache verify` (`python -m flows.cache_check verify` runs the same function)."""
    return subprocess.run(
        [sys.executable, "-m", "flows.cache_check", "verify", *args],
        cwd=project,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def lock_md5(project: Path, path: str) -> str:
    """The md5 dvc.lock records for an out, or for a file inside an out directory (from its listing)."""
    lock = read_yaml(project / "dvc.lock")
    outs = {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}
    if path in outs:
        return outs[path]
    folder, name = path.rsplit("/", 1)
    listing = json.loads(object_path(project, outs[folder]).read_text())
    return next(item["md5"] for item in listing if item["relpath"] == name)


def object_path(project: Path, md5: str) -> Path:
    return project / ".dvc/cache/files/md5" / md5[:2] / md5[2:]


def corrupt(path: Path, how: str) -> None:
    """What a failing disk or an interrupted copy does: bytes change, DVC's read-only mode and mtime stay."""
    before = path.stat()
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        data = data[: len(data) // 2]
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    path.chmod(before.st_mode & 0o777)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_an_intact_cache_passes(built, tmp_path):
    project = copy_project(built, tmp_path / "p")
    result = verify_cache(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "intact" in result.stdout and "objects" in result.stdout


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_corrupted_object_with_intact_workspace_copy(built, tmp_path, how):
    project = copy_project(built, tmp_path / "p")
    obj = object_path(project, lock_md5(project, "data/ingest.json"))
    corrupt(obj, how)
    workspace = (project / "data/ingest.json").read_bytes()
    corrupted = obj.read_bytes()
    assert dvc(project, "status", "validate").stdout.strip() == UP_TO_DATE  # DVC itself does not notice

    result = verify_cache(project)
    assert result.returncode == 1, result.stdout + result.stderr
    relative = obj.relative_to(project).as_posix()
    assert result.stderr.startswith("error: DVC cache: 1 corrupted object"), result.stderr
    assert f"data/ingest.json (stage ingest, dvc.lock and run cache): {relative}" in result.stderr
    repair = f"rm -f {relative} && dvc commit -f data/ingest.json"
    assert repair in result.stderr and "Traceback" not in result.stderr
    assert (project / "data/ingest.json").read_bytes() == workspace and obj.read_bytes() == corrupted

    subprocess.run(repair, shell=True, cwd=project, env=env(), check=True, capture_output=True)
    assert verify_cache(project).returncode == 0
    assert obj.read_bytes() == workspace
    assert dvc(project, "status", "validate").stdout.strip() == UP_TO_DATE


def test_corrupted_object_without_workspace_copy_is_pulled_again(built, tmp_path):
    project = copy_project(built, tmp_path / "p")
    obj = object_path(project, lock_md5(project, "data/splits/train.parquet"))
    corrupt(obj, "truncate")
    (project / "data/splits/train.parquet").unlink()

    result = verify_cache(project)
    assert result.returncode == 1, result.stdout + result.stderr
    relative = obj.relative_to(project).as_posix()
    assert f"data/splits/train.parquet (stage ingest, dvc.lock and run cache): {relative}" in result.stderr
    assert f"rm -f {relative}, then `dvc pull --force data/splits`" in result.stderr
    assert "`dvc repro` (runs stage ingest again" in result.stderr
    assert not (project / "data/splits/train.parquet").exists()

    obj.unlink()
    pulled = dvc(project, "pull", "--force", "data/splits")
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert verify_cache(project).returncode == 0
    assert dvc(project, "status", "validate").stdout.strip() == UP_TO_DATE


def test_only_all_checks_objects_nothing_uses(built, tmp_path):
    project = copy_project(built, tmp_path / "p")
    orphan = object_path(project, "00" + "0" * 30)
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"not the bytes this name promises")
    assert verify_cache(project).returncode == 0
    result = verify_cache(project, "--all")
    assert result.returncode == 1
    advice = f"nothing in dvc.lock or the run cache uses it: rm -f {orphan.relative_to(project)}"
    assert "an unused object" in result.stderr and advice in result.stderr


def test_pull_with_remote_verify_refuses_a_corrupted_remote_object(built, tmp_path):
    """DVC's own check: a remote with `verify = true` re-hashes what `dvc pull` downloads."""
    remote = tmp_path / "remote"
    shutil.copytree(built.parent / "remote", remote)
    md5 = lock_md5(built, "data/ingest.json")
    corrupt(remote / "files/md5" / md5[:2] / md5[2:], "flip")

    clones = {}
    for name, verify in (("trusting", "false"), ("verifying", "true")):
        clone = tmp_path / name
        subprocess.run(["git", "clone", "-q", str(built), str(clone)], check=True)
        for option, value in (("url", str(remote)), ("verify", verify)):
            assert dvc(clone, "remote", "modify", "--local", "store", option, value).returncode == 0
        clones[name] = (clone, dvc(clone, "pull", "--with-deps", "validate"))

    clone, pulled = clones["verifying"]
    assert pulled.returncode != 0 and "data/ingest.json" in pulled.stderr, pulled.stdout + pulled.stderr
    assert not (clone / "data/ingest.json").exists()
    assert not object_path(clone, md5).exists()  # dropped, not kept in the cache
    split = "data/splits/train.parquet"
    assert (clone / split).read_bytes() == (built / split).read_bytes()  # the intact rest arrived

    clone, pulled = clones["trusting"]  # DVC 3.67 without verify: the corrupted bytes land in the workspace
    assert pulled.returncode == 0, pulled.stderr
    result = verify_cache(clone)
    assert result.returncode == 1 and "data/ingest.json (stage ingest, dvc.lock)" in result.stderr
    assert "no intact copy in the workspace" in result.stderr


def test_shipyard_run_stops_before_using_a_corrupted_cache(built, tmp_path):
    """The flow checks the cache first: a run must not record new outputs over an object DVC trusts."""
    project = copy_project(built, tmp_path / "p")
    obj = object_path(project, lock_md5(project, "data/ingest.json"))
    corrupt(obj, "flip")
    kept = ["params.yaml", "dvc.lock", "data/ingest.json", "data/splits/train.parquet"]
    before = {name: (project / name).read_bytes() for name in kept}

    result = shipyard(project, "run")
    assert result.returncode == 1, result.stdout + result.stderr
    relative = obj.relative_to(project).as_posix()
    assert "error: DVC cache: 1 corrupted object" in result.stderr
    assert f"data/ingest.json (stage ingest, dvc.lock and run cache): {relative}" in result.stderr
    assert f"rm -f {relative} && dvc commit -f data/ingest.json" in result.stderr
    assert "Traceback" not in result.stderr
    assert {name: (project / name).read_bytes() for name in kept} == before
    assert not (project / "models").exists()  # no stage ran
