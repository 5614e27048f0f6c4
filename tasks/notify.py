"""Failure notifications: a JSON message POSTed to a webhook (stdlib only, so any stage machine can send it).

Delivery is best effort: a webhook that is down must never turn a run's result into a different one, so
every delivery failure is logged and swallowed.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("shipyard.notify")

NOT_BLESSED_EXIT_CODE = 3  # GateFailed.exit_code: the model was trained but did not pass the gate


def run_status(exit_code: int) -> str:
    """'not blessed' for a gate failure (a model exists, it is just not good enough), else 'failed'."""
    return "not blessed" if exit_code == NOT_BLESSED_EXIT_CODE else "failed"


def build_message(
    run_name: str,
    run_id: str,
    status: str,
    reason: str,
    model_version: str | None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The webhook's body: enough to act on without opening the Prefect UI."""
    return {
        "text": f"shipyard run {run_name}: {status}: {reason}",  # shown as-is by Slack-style receivers
        "run_name": run_name,
        "run_id": run_id,
        "status": status,
        "reason": reason,
        "model_version": model_version,
        "timestamp": (now or datetime.now(UTC)).isoformat(),
    }


def post_json(url: str, message: dict[str, Any], timeout: float = 10.0) -> bool:
    """POST `message` as JSON; True when the receiver answered 2xx. Never raises."""
    body = json.dumps(message).encode("utf-8")
    try:
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return 200 <= response.status < 300
    except urllib.error.HTTPError as err:
        log.warning("webhook %s answered %s %s: notification not delivered", url, err.code, err.reason)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        log.warning("webhook %s unreachable (%s): notification not delivered", url, reason)
    return False
