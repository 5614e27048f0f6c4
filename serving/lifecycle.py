"""The served model's life: load and warm before ready, hot reload with an atomic swap, drain on SIGTERM.

`Served` is one loaded version with its batcher (and data contract). `ServerState.current` is the one new
requests get; a request holds the `Served` it started on until it answers, so a swap never mixes versions in
one response or one batch. The reloader polls `production.json`: a new version is loaded and warmed beside
the old one (off the event loop), then swapped in with one assignment; the old one is retired once its last
request has answered. A version that fails to load or warm is logged, counted and remembered, and the old
one keeps serving; ready stays 200.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import os
from pathlib import Path
from typing import Any

from serving.batching import Batcher, BatchSettings
from serving.contract import InputContract, load_input_contract
from serving.metrics import Metrics
from serving.model import AUTO, CUDA, LoadedModel, ServingError, load_version, read_pointer
from serving.oip import TensorSpec, tensor_specs
from tasks.config import ServeParams

logger = logging.getLogger("shipyard.serving")
API_KEY_ENV = "SHIPYARD_API_KEY"


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    """What the server needs to know, from params' `serve` section and the command line."""

    variant: str = AUTO
    prefer_gpu: bool = True
    require_gpu: bool = False
    validate_inputs: bool = False
    batch: BatchSettings = dataclasses.field(default_factory=BatchSettings)
    timeout: float = 30.0  # seconds per request
    max_body: int = 32 * 2**20  # bytes
    max_items: int = 10_000
    reload_interval: float = 2.0  # seconds; 0 turns hot reload off
    drain_seconds: float = 2.0
    threads: int = 0
    api_key: str | None = None  # bearer token for the inference routes

    @classmethod
    def from_params(cls, params: ServeParams, **overrides: Any) -> ServeSettings:
        """From params' serve section; the API key only from the environment (never from a committed file)."""
        settings = cls(
            variant=params.variant,
            require_gpu=params.require_gpu,
            validate_inputs=params.validate_inputs,
            batch=BatchSettings(
                params.max_batch_size,
                params.max_wait_ms / 1000,
                params.max_queue,
                params.inline_below_ms / 1000,
            ),
            timeout=params.timeout_ms / 1000,
            max_body=int(params.max_body_mb * 2**20),
            max_items=params.max_items,
            reload_interval=params.reload_interval_s,
            drain_seconds=params.drain_seconds,
            threads=params.threads,
            api_key=os.environ.get(API_KEY_ENV) or None,
        )
        given = {key: value for key, value in overrides.items() if value is not None}
        return dataclasses.replace(settings, **given)

    def authorised(self, header: str | None) -> bool:
        """True without an API key; else the Authorization header must be `Bearer <key>`."""
        if self.api_key is None:
            return True
        scheme, _, token = (header or "").partition(" ")
        given, expected = token.strip().encode(), self.api_key.encode()
        return scheme.lower() == "bearer" and hmac.compare_digest(given, expected)


@dataclasses.dataclass
class Served:
    """One loaded version: its model, its batcher, its contract, and the requests still using it."""

    model: LoadedModel
    batcher: Batcher
    contract: InputContract | None
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    in_flight: int = 0
    idle: asyncio.Event | None = None  # set once retired and unused


def load_served(registry: Path, version: str, settings: ServeSettings, metrics: Metrics) -> Served:
    """Load, check and warm one version (blocking: run it off the event loop when serving)."""
    model = load_version(registry, version, settings.prefer_gpu, settings.variant, settings.threads)
    if settings.require_gpu and model.provider != CUDA:
        raise ServingError(f"--require-gpu: CUDA is not active ({model.provider_note}); refusing to start")
    contract = load_input_contract(model) if settings.validate_inputs else None
    one_row = model.warm_up(settings.batch.max_batch)
    batcher = Batcher(
        model.run, settings.batch, model.pad_values, on_batch=metrics.count_batch, name=model.version
    )
    batcher.run_seconds = one_row
    inputs, outputs = tensor_specs(model.session.get_inputs()), tensor_specs(model.session.get_outputs())
    return Served(model, batcher, contract, inputs, outputs)


class ServerState:
    """The version new requests get, the swap, and the reloader's memory of rejected versions."""

    def __init__(self, registry: Path, settings: ServeSettings, metrics: Metrics) -> None:
        self.registry = Path(registry)
        self.settings = settings
        self.metrics = metrics
        self.draining = False
        self.rejected: str | None = None  # the last version that failed to load (not retried until it moves)
        self.current = load_served(self.registry, read_pointer(self.registry), settings, metrics)
        self._announce(self.current)
        metrics.watch_queue(lambda: self.current.batcher.depth)

    def acquire(self) -> Served:
        served = self.current
        served.in_flight += 1
        return served

    def release(self, served: Served) -> None:
        served.in_flight -= 1
        if served.in_flight == 0 and served.idle is not None:
            served.idle.set()

    async def reload_forever(self) -> None:
        """Check the production pointer every `reload_interval` seconds; swap when it moves."""
        while True:
            await asyncio.sleep(self.settings.reload_interval)
            await self.reload_if_moved()

    async def reload_if_moved(self) -> bool:
        """Load the version the pointer names if it is new; True when it was swapped in."""
        try:
            version = read_pointer(self.registry)
        except ServingError as err:
            if self.rejected != str(err):
                logger.error("hot reload: %s; still serving %s", err, self.current.model.version)
                self.rejected = str(err)
            return False
        if version in (self.current.model.version, self.rejected):
            return False
        try:
            served = await asyncio.to_thread(load_served, self.registry, version, self.settings, self.metrics)
        except Exception as err:  # any failure to load or warm: keep the old version
            serving = self.current.model.version
            logger.error("hot reload of %s rejected: %s; still serving %s", version, err, serving)
            self.metrics.reloads.labels("rejected").inc()
            self.rejected = version
            return False
        old, self.current = self.current, served
        self.rejected = None
        self.metrics.reloads.labels("loaded").inc()
        self._announce(served)
        asyncio.get_running_loop().create_task(self.retire(old))
        return True

    async def retire(self, served: Served) -> None:
        """Close a swapped-out version's batcher once its last request has answered."""
        served.idle = asyncio.Event()
        if served.in_flight:
            await served.idle.wait()
        await asyncio.to_thread(served.batcher.close)
        logger.info("retired %s %s", served.model.name, served.model.version)

    def close(self) -> None:
        self.current.batcher.close()

    def _announce(self, served: Served) -> None:
        model = served.model
        logger.info(model.describe())
        if served.contract is not None:
            logger.info(served.contract.describe())
        self.metrics.serving(model.name, model.version, model.variant, model.provider)
