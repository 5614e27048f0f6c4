"""Dynamic micro-batching: requests queued while the model is busy run together as one batch.

One worker thread per loaded model takes the oldest request, adds every request already waiting (up to
`max_batch` rows) and runs them as one `session.run`; results are split back per request. It waits up to
`max_wait` for more only while other requests are still being read and parsed, so a lone request never
waits: batching costs nothing when there is nothing to batch. The queue is bounded (`QueueFull`, answered
503 with Retry-After) and a request whose caller gave up (timeout) is dropped before it runs.

Texts are grouped by length (up to WIDTH_SLACK apart) and each group padded to its longest (ids with the
pad id, mask with 0): the text networks mean-pool over the attention mask, so a text's answer does not
depend on its padding, but padding costs compute. A model whose one-row run (measured at warm-up) is under
`inline_below` answers a request on the event loop itself whenever nothing is queued, running or arriving:
for such a model the hand-off to the worker thread and back costs more than the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.inputs import InputError

logger = logging.getLogger("shipyard.serving")

Tensors = dict[str, np.ndarray]
WIDTH_SLACK = 0.25  # texts up to 25 % longer than the shortest share one run (padding costs compute)
RunBatch = Callable[[Tensors], Tensors]


class QueueFull(InputError):
    """More requests are waiting than `max_queue`: the client should retry later."""

    status = 503


class BatchTimeout(InputError):
    """The request waited longer than the per-request timeout."""

    status = 503


@dataclass(frozen=True)
class BatchSettings:
    max_batch: int = 64  # rows per session.run (a bigger single request runs alone)
    max_wait: float = 0.002  # seconds to wait for requests still being parsed
    max_queue: int = 256  # requests waiting for the model before new ones get 503
    inline_below: float = 0.001  # seconds: an idle model faster than this runs a lone request inline


@dataclass
class Job:
    inputs: Tensors
    rows: int
    future: asyncio.Future[Tensors]
    queued: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """What the metrics want to know about one batch."""

    rows: int
    waits: list[float]  # seconds each job spent queued
    run: float  # seconds to concatenate, run and split


class Batcher:
    """Queues requests for one model and runs them in batches on a worker thread."""

    def __init__(
        self,
        run_batch: RunBatch,
        settings: BatchSettings,
        pad_values: Mapping[str, int] | None = None,
        on_batch: Callable[[BatchStats], None] | None = None,
        name: str = "model",
    ) -> None:
        self.run_batch = run_batch
        self.settings = settings
        self.pad_values = dict(pad_values or {})
        self.on_batch = on_batch
        self.arriving = 0  # requests read but not yet submitted (changed on the event loop only)
        self.depth = 0  # requests queued, not yet taken by the worker
        self.busy = False  # the worker is running a batch
        self.run_seconds = math.inf  # one row's run, as measured at warm-up
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._carry: Job | None = None
        self._closing = False
        self._lock = threading.Lock()
        self._name = name
        self._thread: threading.Thread | None = None
        self.start()

    def start(self) -> None:
        """Start the worker (again, after close: an app's lifespan may run more than once)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._closing, self._carry = False, None
        self._thread = threading.Thread(target=self._work, name=f"batcher-{self._name}", daemon=True)
        self._thread.start()

    async def run(self, inputs: Tensors, timeout: float | None = None, arriving: bool = False) -> Tensors:
        """The model's outputs for this request's rows, run in a batch with whatever else is waiting.

        `arriving`: the caller counted itself in `self.arriving` while parsing; it is uncounted once queued.
        """
        if arriving:
            self.arriving -= 1
        if self._idle_and_alone(len(next(iter(inputs.values())))):
            return self._run_inline(inputs)
        loop = asyncio.get_running_loop()
        job = Job(inputs, len(next(iter(inputs.values()))), loop.create_future())
        self._enqueue(job)
        try:
            return await asyncio.wait_for(job.future, timeout)
        except TimeoutError:
            raise BatchTimeout(f"no answer within the request timeout of {timeout:g} s") from None

    def _idle_and_alone(self, rows: int) -> bool:
        """Nothing queued, running or arriving, and the run quicker than a hand-off to the worker thread:
        then batching has nothing to gain and the hand-off would be the request's biggest cost."""
        quick = rows * self.run_seconds < self.settings.inline_below
        quick = quick and not self.busy and self.depth == 0 and self.arriving <= 0
        return quick and self._thread is not None and self._thread.is_alive()

    def _run_inline(self, inputs: Tensors) -> Tensors:
        started = time.perf_counter()
        outputs = self.run_batch(inputs)
        if self.on_batch is not None:
            rows = len(next(iter(inputs.values())))
            self.on_batch(BatchStats(rows, [0.0], time.perf_counter() - started))
        return outputs

    def _enqueue(self, job: Job) -> None:
        if self._thread is None or not self._thread.is_alive():
            raise QueueFull("the server is stopping; retry on another instance or later")
        if self.depth >= self.settings.max_queue:
            limit = self.settings.max_queue
            raise QueueFull(f"{self.depth} requests are waiting for the model (limit {limit}); retry later")
        with self._lock:
            self.depth += 1
        self._queue.put(job)

    def close(self) -> None:
        """Finish every queued request, then stop the worker."""
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join()

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._run(batch)

    def _next_batch(self) -> list[Job] | None:
        """The oldest job plus those waiting behind it, up to max_batch rows; None when closed."""
        first = self._carry or self._queue.get()
        self._carry = None
        if first is None:
            return None
        batch, rows, deadline = [first], first.rows, None
        while rows < self.settings.max_batch and not self._closing:
            job = self._take_waiting(deadline)
            if job is None:
                if self.arriving <= 0 or self.settings.max_wait <= 0:
                    break
                deadline = deadline or time.perf_counter() + self.settings.max_wait
                if time.perf_counter() >= deadline:
                    break
            elif rows + job.rows > self.settings.max_batch:
                self._carry = job
                break
            else:
                batch.append(job)
                rows += job.rows
        with self._lock:
            self.depth -= len(batch)
        return batch

    def _take_waiting(self, deadline: float | None) -> Job | None:
        """A queued job, if any; waits a little (up to the deadline) when one was set."""
        try:
            if deadline is None:
                job = self._queue.get_nowait()
            else:
                job = self._queue.get(timeout=max(0.0, min(deadline - time.perf_counter(), 0.0005)))
        except queue.Empty:
            return None
        if job is None:  # the stop mark: run this batch, then stop
            self._closing = True
            self._queue.put(None)
        return job

    def _run(self, batch: list[Job]) -> None:
        live = [job for job in batch if not job.future.cancelled()]  # callers that timed out are gone
        if not live:
            return
        started = time.perf_counter()
        self.busy = True
        results: dict[int, Tensors | BaseException] = {}
        for group in width_groups(live):
            results.update(zip(map(id, group), self._run_group(group), strict=True))
        self.busy = False
        finished = time.perf_counter()
        resolve_later(live, [results[id(job)] for job in live])
        if self.on_batch is not None:
            waits = [started - job.queued for job in live]
            self.on_batch(BatchStats(sum(job.rows for job in live), waits, finished - started))

    def _run_group(self, group: list[Job]) -> list[Tensors | BaseException]:
        """One run for the group; when it fails, each job alone, so one bad request fails nobody else."""
        try:
            outputs = self.run_batch(concatenate([job.inputs for job in group], self.pad_values))
            return list(split(outputs, [job.rows for job in group]))
        except Exception as err:  # the callers answer it; the worker keeps serving
            if len(group) == 1:
                logger.exception("a request failed in the model")
                return [err]
            return [self._run_alone(job) for job in group]

    def _run_alone(self, job: Job) -> Tensors | BaseException:
        try:
            return self.run_batch(job.inputs)
        except Exception as err:
            logger.exception("a request failed in the model")
            return err


def resolve_later(jobs: Sequence[Job], results: Sequence[Tensors | BaseException]) -> None:
    """Hand each job its result on its event loop (one wake-up per loop, not per job)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Job, Any]]] = {}
    for job, result in zip(jobs, results, strict=True):
        by_loop.setdefault(job.future.get_loop(), []).append((job, result))
    for loop, pairs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a loop closed while the batch ran: nobody waits
            loop.call_soon_threadsafe(_resolve, pairs)


def _resolve(pairs: list[tuple[Job, Any]]) -> None:
    for job, result in pairs:
        if job.future.done():
            continue
        if isinstance(result, BaseException):
            job.future.set_exception(result)
        else:
            job.future.set_result(result)


def width_groups(jobs: Sequence[Job], slack: float = WIDTH_SLACK) -> list[list[Job]]:
    """Jobs grouped so that padding stays small: sorted by sequence width, a new group whenever a width
    passes the group's narrowest by more than `slack`. Fixed-shape inputs make one group."""
    if len(jobs) == 1 or all(value.ndim != 2 for value in jobs[0].inputs.values()):
        return [list(jobs)]
    groups: list[list[Job]] = []
    for job in sorted(jobs, key=_width):
        if groups and _width(job) <= _width(groups[-1][0]) * (1 + slack):
            groups[-1].append(job)
        else:
            groups.append([job])
    return groups


def _width(job: Job) -> int:
    return max(value.shape[1] for value in job.inputs.values() if value.ndim == 2)


def concatenate(requests: Sequence[Tensors], pad_values: Mapping[str, int]) -> Tensors:
    """One batch per input name; 2-D integer inputs of different widths padded to the widest."""
    if len(requests) == 1:
        return requests[0]
    batch = {}
    for name in requests[0]:
        parts = [request[name] for request in requests]
        width = max(part.shape[1] for part in parts) if parts[0].ndim == 2 else None
        if width is not None and any(part.shape[1] != width for part in parts):
            parts = [_pad(part, width, pad_values.get(name, 0)) for part in parts]
        batch[name] = np.concatenate(parts)
    return batch


def _pad(part: np.ndarray, width: int, value: int) -> np.ndarray:
    if part.shape[1] == width:
        return part
    return np.pad(part, ((0, 0), (0, width - part.shape[1])), constant_values=value)


def split(outputs: Tensors, rows: Sequence[int]) -> list[Tensors]:
    """Each request's rows of every output, in order."""
    bounds = np.cumsum([0, *rows])
    spans = zip(bounds[:-1], bounds[1:], strict=True)
    return [{name: value[start:stop] for name, value in outputs.items()} for start, stop in spans]
