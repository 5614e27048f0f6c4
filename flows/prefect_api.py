"""Prefect's temporary local API, started before this process imports Prefect so the two overlap.

Prefect starts the same server itself (uvicorn on `prefect.server.api.server:create_app` in ephemeral
mode) on the first API call, but only after the client has imported Prefect and its server modules;
starting it first saves several seconds of a run. With PREFECT_API_URL set, nothing is started.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

STARTUP_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]
    return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)


def _wait_ready(process: subprocess.Popen, url: str) -> None:
    import httpx

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Prefect's temporary API exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"Prefect's temporary API did not start within {STARTUP_TIMEOUT_S} s")


def start_temporary_api() -> Callable[[], None]:
    """Start the temporary API unless PREFECT_API_URL names a server; returns `ready()` to wait for it.

    It is stopped at interpreter exit, after Prefect's own exit handlers (registered later, run
    earlier) have flushed their logs and events to it.
    """
    if os.environ.get("PREFECT_API_URL"):
        return lambda: None
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    process = _start(port)
    atexit.register(_stop, process)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # let exit handlers run on SIGTERM too
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    os.environ["PREFECT_API_URL"] = url
    return lambda: _wait_ready(process, url)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
