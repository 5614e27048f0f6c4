"""A scheduled Prefect deployment of the pipeline, served by a long-lived process (flow.serve)."""

from __future__ import annotations

from typing import Any

from flows.pipeline import pipeline


def build_deployment(name: str, cron: str) -> Any:
    """The pipeline as a deployment with a cron schedule (validated by Prefect's schedule model)."""
    from prefect.client.schemas.schedules import CronSchedule

    CronSchedule(cron=cron)  # raises ValueError on a bad expression
    return pipeline.to_deployment(name=name, cron=cron, description="shipyard pipeline on a schedule")


def serve_deployment(deployment: Any) -> None:
    from prefect import serve

    serve(deployment)
