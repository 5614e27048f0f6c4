"""The failure webhook: the JSON it sends, and that a broken receiver never raises."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tasks import notify


def serve(status: int):
    """A receiver on 127.0.0.1 answering `status`; returns (server, url, received bodies)."""
    received: list[tuple[str, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.headers["Content-Type"], json.loads(body)))
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/hook", received


def test_message_names_run_status_reason_version_and_time():
    now = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
    message = notify.build_message("brave-fox", "42", "not blessed", "accuracy 0.7 < 0.8", "v3", now=now)
    assert message["run_name"] == "brave-fox" and message["run_id"] == "42"
    assert message["status"] == "not blessed" and message["reason"] == "accuracy 0.7 < 0.8"
    assert message["model_version"] == "v3" and message["timestamp"] == "2026-11-22T03:00:00+00:00"
    assert "brave-fox" in message["text"] and "accuracy 0.7 < 0.8" in message["text"]


def test_gate_failures_are_not_blessed_others_failed():
    assert notify.run_status(3) == "not blessed"
    assert notify.run_status(1) == "failed"


def test_post_delivers_json():
    server, url, received = serve(200)
    try:
        assert notify.post_json(url, {"status": "failed"}) is True
    finally:
        server.shutdown()
        server.server_close()
    assert received == [("application/json", {"status": "failed"})]


def test_receiver_error_is_logged_not_raised(caplog):
    server, url, received = serve(500)
    try:
        with caplog.at_level("WARNING", logger="shipyard.notify"):
            assert notify.post_json(url, {"status": "failed"}) is False
    finally:
        server.shutdown()
        server.server_close()
    assert len(received) == 1 and "answered 500" in caplog.text


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "not a url"])
def test_unreachable_or_bad_url_is_logged_not_raised(url, caplog):
    with caplog.at_level("WARNING", logger="shipyard.notify"):
        assert notify.post_json(url, {"status": "failed"}, timeout=2) is False
    assert "notification not delivered" in caplog.text
