"""A real server process on loopback for tests: `python -m serving` on a free port, stopped afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class LiveServer:
    process: subprocess.Popen[str]
    url: str
    port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the server and wait for it to exit; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "SHIPYARD_API_KEY"}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


@contextmanager
def live_server(
    registry: Path, *options: str, env: dict[str, str] | None = None, ready_timeout: float = 60
) -> Iterator[LiveServer]:
    """Start `python -m serving --registry R --cpu OPTIONS...`; wait until /v2/health/ready is 200."""
    port = free_port()
    log = registry.parent / f"server-{port}.log"
    command = [sys.executable, "-m", "serving", "--registry", str(registry), "--cpu", "--port", str(port)]
    with log.open("w") as sink:
        process = subprocess.Popen(
            [*command, *options],
            cwd=registry.parent,
            env=child_env(**(env or {})),
            stdout=sink,
            stderr=sink,
            text=True,
        )
    server = LiveServer(process, f"http://127.0.0.1:{port}", port, log)
    try:
        wait_ready(server, ready_timeout)
        yield server
    finally:
        server.stop(signal.SIGKILL if process.poll() is None else signal.SIGTERM, timeout=10)


def wait_ready(server: LiveServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"the server exited with {server.process.returncode}:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the server was not ready within {timeout} s:\n{server.output()}")
