"""`shipyard cache verify`: find corrupted objects in the DVC cache before DVC copies them anywhere.

DVC 3.67 trusts its cache. `dvc checkout`, `dvc pull`, `dvc repro` (a stage restored from the run cache)
and `dvc push` copy an object as it is: they never re-hash it. Its own check (dvc-data's `check`) skips any
object whose mode is read-only, which is every object DVC wrote, and trusts the state database (mtime,
inode, size), so a bit flip on disk or a truncated copy passes; `dvc status` then says "up to date".
`dvc cache check` was proposed (treeverse/dvc#9561) but does not exist. DVC re-hashes only what it
downloads from a remote whose `verify` option is true.

An object's file name is the md5 of its bytes, so re-hashing the bytes proves it intact. This reads
objects and never writes: nothing in the cache or the workspace changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.console import fail
from tasks.errors import ShipyardError

cache_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)


@cache_app.callback()
def cache_group() -> None:
    """The DVC cache: verify that each object still holds the bytes its name (an md5) says."""


class CacheCorrupted(ShipyardError):
    """An object in the DVC cache whose bytes no longer match its name."""


@dataclass
class Use:
    """Where an object lands: a workspace path, the stage that writes it, from dvc.lock or the run cache."""

    path: str
    stage: str
    source: str  # "dvc.lock" or "run cache"
    out: str = ""  # the stage's out it belongs to (a directory's files: the directory)

    def __post_init__(self) -> None:
        self.out = self.out or self.path


@dataclass
class Corrupt:
    oid: str
    object_path: Path
    actual: str
    size: int
    uses: list[Use] = field(default_factory=list)


@dataclass
class Report:
    checked: int = 0
    bytes: int = 0
    seconds: float = 0.0
    corrupt: list[Corrupt] = field(default_factory=list)


def md5_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def open_repo(root: str | Path = ".") -> Any:
    import logging

    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    logging.getLogger("dvc").setLevel(logging.WARNING)
    try:
        return Repo(str(root))
    except NotDvcRepoError:
        raise ShipyardError(f"{Path(root).resolve()} is not in a DVC project (no .dvc/ folder)") from None


def lock_uses(repo: Any, targets: list[str] | None = None) -> dict[str, list[Use]]:
    """Objects that dvc.lock names (what `dvc checkout`, `pull` and `push` copy), by oid."""
    uses: dict[str, list[Use]] = {}
    for stage in repo.index.stages:
        if targets and stage.name not in targets:
            continue
        for out in stage.outs:
            oid = out.hash_info.value if out.use_cache and out.hash_info else None
            if oid:
                uses.setdefault(oid, []).append(Use(str(out.def_path), stage.name, "dvc.lock"))
    return uses


def run_cache_uses(repo: Any) -> dict[str, list[Use]]:
    """Objects of past runs that `dvc repro` may restore instead of running a stage, by oid."""
    import yaml

    stage_of = {str(out.def_path): stage.name for stage in repo.index.stages for out in stage.outs}
    uses: dict[str, list[Use]] = {}
    root = Path(repo.stage_cache.cache_dir)
    for entry in sorted(root.glob("*/*/*")) if root.is_dir() else []:
        try:
            outs = (yaml.safe_load(entry.read_text(encoding="utf-8")) or {}).get("outs") or []
        except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError):
            continue  # not an entry DVC could restore from either
        for out in outs:
            if isinstance(out, dict) and out.get("md5") and out.get("path"):
                path = str(out["path"])
                uses.setdefault(str(out["md5"]), []).append(Use(path, stage_of.get(path, "?"), "run cache"))
    return uses


def verify(
    root: str | Path = ".", run_cache: bool = True, every: bool = False, targets: list[str] | None = None
) -> Report:
    """Re-hash the objects dvc.lock (and the run cache) use, or `every` object in the cache.

    A directory's `.dir` listing is checked first; the files it lists are checked only when it is
    intact. Objects that are missing are DVC's to report ("not in cache"), not ours.
    """
    from dvc.exceptions import DvcException

    repo = open_repo(root)
    try:
        odb = repo.cache.local
        queue = lock_uses(repo, targets)
        if run_cache:
            for oid, found in run_cache_uses(repo).items():
                queue.setdefault(oid, []).extend(found)
        if every:
            for oid in odb.all():
                queue.setdefault(oid, [])
    except DvcException as err:
        raise ShipyardError(f"DVC could not read the project's stages: {err}") from None
    finally:
        repo.close()
    return check_objects(odb, queue)


def check_objects(odb: Any, queue: dict[str, list[Use]]) -> Report:
    report = Report()
    started = time.perf_counter()
    seen: set[str] = set()
    while queue:
        oid, uses = queue.popitem()
        if oid in seen:
            continue
        seen.add(oid)
        path = Path(odb.oid_to_path(oid))
        try:
            size = path.stat().st_size
            actual = md5_file(path)
        except FileNotFoundError:
            continue
        report.checked += 1
        report.bytes += size
        if actual != oid.removesuffix(".dir"):
            report.corrupt.append(Corrupt(oid, path, actual, size, uses))
        elif oid.endswith(".dir"):
            for item in json.loads(path.read_bytes()):
                listed = [Use(f"{u.path}/{item['relpath']}", u.stage, u.source, u.out) for u in uses]
                queue.setdefault(item["md5"], []).extend(listed)
    report.seconds = time.perf_counter() - started
    report.corrupt.sort(key=lambda c: (c.uses[0].path if c.uses else "~", c.oid))
    return report


def shown(path: str | Path) -> str:
    """A path relative to the cwd when it is inside it (what a user copies into a shell)."""
    path = Path(path)
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def intact_copy(corrupt: Corrupt, root: Path) -> Use | None:
    """A workspace file that still holds the object's bytes (md5 equals its name), if any."""
    for use in corrupt.uses:
        path = root / use.path
        if not corrupt.oid.endswith(".dir") and path.is_file() and md5_file(path) == corrupt.oid:
            return use
    return None


def advice(corrupt: Corrupt, root: Path) -> str:
    """What to do: the object must go, then DVC re-caches it from an intact copy, a remote, or a run."""
    remove = f"rm -f {shown(corrupt.object_path)}"
    copy = intact_copy(corrupt, root)
    if copy is not None:
        return f"the workspace copy {copy.path} is intact: {remove} && dvc commit -f {copy.out}"
    in_lock = [u for u in corrupt.uses if u.source == "dvc.lock"]
    if in_lock:
        use = in_lock[0]
        return (
            f"no intact copy in the workspace: {remove}, then `dvc pull --force {use.out}` "
            f"(from a remote that has it) or `dvc repro` (runs stage {use.stage} again, and what follows)"
        )
    if corrupt.uses:
        return f"only the run cache uses it: {remove} (DVC then runs the stage instead of restoring it)"
    return f"nothing in dvc.lock or the run cache uses it: {remove}"


def describe(corrupt: Corrupt) -> str:
    sources: dict[tuple[str, str], set[str]] = {}
    for use in corrupt.uses:
        sources.setdefault((use.path, use.stage), set()).add(use.source)
    where = ", ".join(
        f"{path} (stage {stage}, {' and '.join(sorted(found))})"
        for (path, stage), found in sorted(sources.items())
    )
    return (
        f"{where or 'an unused object'}: {shown(corrupt.object_path)} holds {corrupt.size} bytes "
        f"with md5 {corrupt.actual}, not {corrupt.oid.removesuffix('.dir')}"
    )


def failure_message(report: Report, root: Path) -> str:
    count = len(report.corrupt)
    lines = [
        f"DVC cache: {count} corrupted object{'s' if count > 1 else ''} (bytes that no longer match the "
        "md5 they are named by); fix before any dvc checkout, pull, push or repro copies them:"
    ]
    for corrupt in report.corrupt:
        lines += [f"  {describe(corrupt)}", f"    {advice(corrupt, root)}"]
    return "\n".join(lines)


def check_cache(root: str | Path = ".", run_cache: bool = True, targets: list[str] | None = None) -> Report:
    """verify(), raising CacheCorrupted (naming file, object and what to do) when any object is bad."""
    report = verify(root, run_cache=run_cache, targets=targets)
    if report.corrupt:
        raise CacheCorrupted(failure_message(report, Path(root)))
    return report


@cache_app.command("verify")
def verify_command(
    all_: Annotated[
        bool,
        typer.Option("--all", help="every object in the cache, not only what dvc.lock and the run cache use"),
    ] = False,
) -> None:
    """Re-hash the DVC cache objects that dvc.lock and the run cache use; exit 1 naming any corrupted one.

    Run it before `dvc push` and after restoring a cache from backup. Nothing is changed: each bad
    object is listed with the workspace file it belongs to and the commands that repair it.
    """
    try:
        report = verify(".", run_cache=True, every=all_)
    except ShipyardError as err:
        fail(str(err))
    if report.corrupt:
        fail(failure_message(report, Path(".")))
    size, seconds = report.bytes / 1e6, report.seconds
    typer.echo(f"DVC cache: {report.checked} objects ({size:.1f} MB) intact, verified in {seconds:.2f} s")


if __name__ == "__main__":  # `python -m flows.cache_check verify` runs `shipyard cache verify`
    os.environ.setdefault("DO_NOT_TRACK", "1")
    cache_app()
