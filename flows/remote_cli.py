"""`shipyard remote`: configure the DVC remote that `dvc push` and `dvc pull` use for data and models.

Wiring only: the remote is written by DVC's own config class (the same code as `dvc remote add` and
`dvc remote modify`), so DVC validates it and users can keep managing it with `dvc remote ...`.
The URL and endpoint go to the committed `.dvc/config`; credentials never do: they come from the
environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS profiles) or from DVC's local config
(`.dvc/config.local`, git-ignored), which is where `--access-key-id/--secret-access-key` write.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from flows.console import fail

remote_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="The DVC remote (S3 or S3-compatible) for data and model versions: then `dvc push` / `dvc pull`.",
)

DEFAULT_NAME = "storage"
# AWS's bucket naming rules; MinIO, Ceph and the other S3-compatible stores follow them too.
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
REMOTE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")
SECRET_OPTIONS = ("access_key_id", "secret_access_key", "session_token")


class RemoteError(ValueError):
    """Bad input or a project DVC cannot configure: shown as one `error:` line."""


def check_s3_url(url: str) -> None:
    """s3://bucket[/path] with a valid bucket name: DVC would accept worse and fail only at push time."""
    if not url.startswith("s3://"):
        raise RemoteError(f"remote URL {url!r}: expected s3://BUCKET/PATH (S3 or an S3-compatible store)")
    bucket = url.removeprefix("s3://").split("/", 1)[0]
    if not bucket:
        raise RemoteError(f"remote URL {url!r}: the bucket name is empty (expected s3://BUCKET/PATH)")
    if not BUCKET.fullmatch(bucket) or ".." in bucket:
        raise RemoteError(
            f"remote URL {url!r}: {bucket!r} is not a valid bucket name "
            "(3-63 lowercase letters, digits, dots or hyphens, starting and ending with a letter or digit)"
        )


def check_endpoint_url(endpoint: str) -> None:
    """http(s)://host[:port][/path], and no credentials in it: this value is committed."""
    try:
        parts = urlsplit(endpoint)
        port = parts.port  # raises ValueError on a port that is not a number in range
    except ValueError as err:
        raise RemoteError(f"--endpoint-url {endpoint!r}: {err}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RemoteError(
            f"--endpoint-url {endpoint!r}: expected http(s)://HOST[:PORT], e.g. http://minio:9000"
        )
    if parts.username or parts.password:
        raise RemoteError(
            f"--endpoint-url {endpoint!r}: credentials in the URL would be committed in .dvc/config; "
            "use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or --access-key-id/--secret-access-key"
        )
    if port == 0:
        raise RemoteError(f"--endpoint-url {endpoint!r}: port 0 is not a port a server listens on")


def check_name(name: str) -> str:
    """DVC lowercases remote names itself; we do the same and refuse what its INI section cannot hold."""
    lowered = name.lower()
    if not REMOTE_NAME.fullmatch(lowered):
        raise RemoteError(f"--name {name!r}: use letters, digits, '_', '.' or '-'")
    return lowered


def dvc_config() -> Any:
    """DVC's config for the project around the cwd; an error naming the folder outside one."""
    from dvc.config import Config
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Config(dvc_dir=Repo.find_dvc_dir())
    except NotDvcRepoError:
        raise RemoteError(f"{Path.cwd()} is not in a DVC project (no .dvc/ folder here or above)") from None


@contextmanager
def editing(config: Any, level: str):
    """config.edit(level) with DVC's validation errors as RemoteError (nothing is written on error)."""
    from dvc.config import ConfigError

    try:
        with config.edit(level) as conf:
            yield conf
    except ConfigError as err:
        raise RemoteError(f"DVC refused the remote config: {err}") from None


def remote_section(url: str, endpoint: str | None, previous: dict[str, Any]) -> dict[str, Any]:
    """The committed section: url and endpoint, keeping other non-secret options the user set."""
    kept = {k: v for k, v in previous.items() if k not in ("url", "endpointurl", *SECRET_OPTIONS)}
    section = {"url": url, **kept}
    if endpoint:
        section["endpointurl"] = endpoint
    if not previous:
        section["verify"] = "true"  # DVC re-hashes what `dvc pull` downloads
    return section


def add_remote(
    name: str,
    url: str,
    endpoint: str | None,
    default: bool,
    force: bool,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> str:
    """Validate, then write the remote; returns what happened: 'added', 'updated' or 'unchanged'.

    Like `dvc remote add`, a name that exists with another URL or endpoint needs --force; the same
    values again are a no-op, so scripts can run it every time.
    """
    name = check_name(name)
    check_s3_url(url)
    if endpoint is not None:
        check_endpoint_url(endpoint)
    if (access_key_id is None) != (secret_access_key is None):
        raise RemoteError("--access-key-id and --secret-access-key go together")
    config = dvc_config()
    committed = config.load_one("repo")
    previous = committed["remote"].get(name)
    section = remote_section(url, endpoint, previous or {})
    state = "added" if previous is None else ("unchanged" if previous == section else "updated")
    if state == "updated" and not force:
        raise RemoteError(
            f"remote {name!r} already exists in .dvc/config with url {previous.get('url')!r}"
            f"{endpoint_note(previous)}; use --force to replace it"
        )
    is_default = committed["core"].get("remote") == name
    if state != "unchanged" or (default and not is_default):
        with editing(config, "repo") as conf:
            conf["remote"][name] = section
            if default:
                conf["core"]["remote"] = name
    if access_key_id is not None:
        with editing(config, "local") as conf:
            conf["remote"].setdefault(name, {}).update(
                access_key_id=access_key_id, secret_access_key=secret_access_key
            )
    return state


def endpoint_note(section: dict[str, Any]) -> str:
    return f" and endpoint {section['endpointurl']!r}" if section.get("endpointurl") else ""


def remove_remote(name: str) -> None:
    """Drop the remote from the committed and the local config, and the default pointing at it."""
    name = check_name(name)
    config = dvc_config()
    if name not in config.load_one("repo")["remote"]:
        raise RemoteError(f"remote {name!r} is not in .dvc/config (see `shipyard remote list`)")
    for level in ("local", "repo"):  # local first: DVC validates the merge of both
        with editing(config, level) as conf:
            conf["remote"].pop(name, None)
            if conf["core"].get("remote") == name:
                del conf["core"]["remote"]


def describe_remotes() -> list[str]:
    """One line per remote: name, url, endpoint, default, where its credentials come from (never them)."""
    config = dvc_config()
    committed, local = config.load_one("repo"), config.load_one("local")
    default = local["core"].get("remote") or committed["core"].get("remote")
    lines = []
    for name, section in sorted(config["remote"].items()):
        mark = "*" if name == default else " "
        where = credentials_source(committed["remote"].get(name, {}), local["remote"].get(name, {}))
        lines.append(f"{mark} {name}  {section.get('url')}{endpoint_note(section)}  credentials: {where}")
    return lines


def credentials_source(committed: dict[str, Any], local: dict[str, Any]) -> str:
    if any(key in committed for key in SECRET_OPTIONS):
        return "IN .dvc/config (committed!): move them with `dvc remote modify --local`"
    if any(key in local for key in SECRET_OPTIONS):
        return ".dvc/config.local"
    return "environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an AWS profile)"


@remote_app.command()
def add(
    url: Annotated[str, typer.Argument(help="s3://BUCKET/PATH")],
    name: Annotated[str, typer.Option(help="the DVC remote's name")] = DEFAULT_NAME,
    endpoint_url: Annotated[
        str | None, typer.Option(help="an S3-compatible store's URL, e.g. http://minio:9000")
    ] = None,
    default: Annotated[
        bool, typer.Option("--default/--no-default", help="make it the remote `dvc push`/`pull` use")
    ] = True,
    force: Annotated[bool, typer.Option(help="replace a remote of this name with other values")] = False,
    access_key_id: Annotated[
        str | None, typer.Option(help="written to .dvc/config.local only (git-ignored)")
    ] = None,
    secret_access_key: Annotated[
        str | None, typer.Option(help="written to .dvc/config.local only (git-ignored)")
    ] = None,
) -> None:
    """Add (or with --force replace) an S3 remote in .dvc/config; then `dvc push` and `dvc pull`.

    Credentials are never written to .dvc/config: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, use an
    AWS profile, or pass --access-key-id/--secret-access-key to keep them in .dvc/config.local.
    """
    try:
        state = add_remote(name, url, endpoint_url, default, force, access_key_id, secret_access_key)
    except RemoteError as err:
        fail(str(err))
    name = name.lower()
    typer.echo(f"remote {name!r} {state}: {url}" + (f" via {endpoint_url}" if endpoint_url else ""))
    if default:
        typer.echo(f"default remote: {name} (dvc push / dvc pull use it; commit .dvc/config)")


@remote_app.command("list")
def list_() -> None:
    """The configured remotes (* marks the default) and where each one's credentials come from."""
    try:
        lines = describe_remotes()
    except RemoteError as err:
        fail(str(err))
    typer.echo("\n".join(lines) if lines else "no remote configured (shipyard remote add s3://BUCKET/PATH)")


@remote_app.command()
def remove(name: Annotated[str, typer.Argument(help="the remote's name")] = DEFAULT_NAME) -> None:
    """Remove a remote from .dvc/config and .dvc/config.local (the data in the bucket stays)."""
    try:
        remove_remote(name)
    except RemoteError as err:
        fail(str(err))
    typer.echo(f"remote {name.lower()!r} removed")
