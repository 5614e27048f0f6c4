"""The micro-batcher on its own (serving/batching.py): a fake run_batch stands in for the model, no HTTP.

The fake can hold its first batch on the worker thread, so the tests decide exactly which requests are
queued together behind it instead of hoping that timing lines them up.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import numpy as np
import pytest

from serving.batching import Batcher, BatchSettings, BatchTimeout, QueueFull, Tensors

WAIT = 5.0  # seconds before a stuck test gives up instead of hanging


class FakeModel:
    """A run_batch that doubles every input, records each batch, can be held, and fails on negatives."""

    def __init__(self, hold: bool = False) -> None:
        self.batches: list[Tensors] = []
        self.threads: list[str] = []  # the thread each batch ran on
        self.entered = threading.Event()
        self.gate = threading.Event()
        if not hold:
            self.gate.set()

    def __call__(self, inputs: Tensors) -> Tensors:
        self.batches.append({name: value.copy() for name, value in inputs.items()})
        self.threads.append(threading.current_thread().name)
        self.entered.set()
        if not self.gate.wait(WAIT):
            raise TimeoutError("the test never released the held batch")
        if any((value < 0).any() for value in inputs.values()):
            raise RuntimeError("negative input")
        return {name: value * 2 for name, value in inputs.items()}

    @property
    def sizes(self) -> list[int]:
        return [len(next(iter(batch.values()))) for batch in self.batches]

    def tags(self) -> list[float]:
        """Every first-column value the model was ever given, in order."""
        return [float(v) for batch in self.batches for v in batch["x"][:, 0]]


@pytest.fixture
def make_batcher() -> Iterator[Callable[..., tuple[Batcher, FakeModel]]]:
    """make_batcher(hold=False, pad_values=None, **settings) -> (batcher, fake); all closed afterwards."""
    made: list[tuple[Batcher, FakeModel]] = []

    def make(hold: bool = False, pad_values: dict[str, int] | None = None, **settings: Any):
        fake = FakeModel(hold)
        batcher = Batcher(fake, BatchSettings(**settings), pad_values, name="fake")
        made.append((batcher, fake))
        return batcher, fake

    yield make
    for batcher, fake in made:
        fake.gate.set()
        batcher.close()


def rows(tag: int, count: int = 1) -> Tensors:
    """`count` rows whose values say which request they came from: tag*100 + row."""
    return {"x": np.array([[tag * 100 + r] for r in range(count)], dtype=np.float32)}


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(scenario(), 3 * WAIT))


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


async def hold_worker(batcher: Batcher, fake: FakeModel) -> asyncio.Task[Tensors]:
    """Submit a one-row request (tag 0) and wait until the worker is stuck running it."""
    first = asyncio.ensure_future(batcher.run(rows(0)))
    assert await asyncio.to_thread(fake.entered.wait, WAIT)
    return first


async def queue_behind(batcher: Batcher, requests: list[Tensors], **kw: Any) -> list[asyncio.Task[Tensors]]:
    """Submit requests while the worker is held; return once all of them are queued."""
    depth = batcher.depth
    tasks = [asyncio.ensure_future(batcher.run(inputs, **kw)) for inputs in requests]
    await until(lambda: batcher.depth == depth + len(requests))
    return tasks


def test_requests_queued_together_run_as_one_batch(make_batcher: Callable[..., Any]) -> None:
    batcher, fake = make_batcher(hold=True, max_batch=64, max_wait=0)

    async def scenario() -> None:
        first = await hold_worker(batcher, fake)
        waiting = await queue_behind(batcher, [rows(1), rows(2, 2), rows(3)])
        fake.gate.set()
        await asyncio.gather(first, *waiting)

    run(scenario)
    assert fake.sizes == [1, 4]


def test_a_lone_request_does_not_wait_for_max_wait(make_batcher: Callable[..., Any]) -> None:
    batcher, fake = make_batcher(max_wait=1.0)

    async def timed() -> float:
        await batcher.run(rows(1))  # the worker thread is up
        started = time.perf_counter()
        await batcher.run(rows(2))
        return time.perf_counter() - started

    elapsed = run(timed)
    assert elapsed < 0.2, f"a lone request took {elapsed:.3f} s with max_wait 1 s"
    assert fake.sizes == [1, 1]


def test_max_wait_holds_the_batch_open_only_while_requests_are_arriving(
    make_batcher: Callable[..., Any],
) -> None:
    batcher, fake = make_batcher(max_wait=0.3)

    async def scenario() -> float:
        batcher.arriving = 1  # one more request is still being read and parsed
        started = time.perf_counter()
        first = asyncio.ensure_future(batcher.run(rows(1)))
        await asyncio.sleep(0.05)
        second_task = asyncio.ensure_future(batcher.run(rows(2)))
        await asyncio.sleep(0.01)  # queued before the batcher may see that nothing is arriving
        batcher.arriving = 0
        second = await second_task
        await first
        np.testing.assert_array_equal(second["x"], rows(2)["x"] * 2)
        return time.perf_counter() - started

    elapsed = run(scenario)
    assert fake.sizes == [2], "the request that arrived during max_wait should have joined the batch"
    assert elapsed < 0.6


def test_max_wait_is_bounded_when_the_awaited_request_never_comes(make_batcher: Callable[..., Any]) -> None:
    batcher, fake = make_batcher(max_wait=0.2)

    async def scenario() -> float:
        batcher.arriving = 1
        started = time.perf_counter()
        await batcher.run(rows(1))
        return time.perf_counter() - started

    elapsed = run(scenario)
    assert 0.15 <= elapsed < 1.0, elapsed
    assert fake.sizes == [1]


def test_max_batch_is_respected_and_a_bigger_request_runs_alone_unsplit(
    make_batcher: Callable[..., Any],
) -> None:
    batcher, fake = make_batcher(hold=True, max_batch=4, max_wait=0)
    sizes = [3, 2, 6, 1, 1, 1, 1, 1]

    async def scenario() -> list[Tensors]:
        first = await hold_worker(batcher, fake)
        waiting = await queue_behind(batcher, [rows(tag, n) for tag, n in enumerate(sizes, start=1)])
        fake.gate.set()
        await first
        return await asyncio.gather(*waiting)

    results = run(scenario)
    assert fake.sizes == [1, 3, 2, 6, 4, 1]
    assert [len(result["x"]) for result in results] == sizes
    assert fake.tags()[1:] == [v for tag, n in enumerate(sizes, start=1) for v in rows(tag, n)["x"][:, 0]]


def test_each_request_gets_back_its_own_rows(make_batcher: Callable[..., Any]) -> None:
    batcher, fake = make_batcher(hold=True, max_batch=64, max_wait=0)
    sizes = [2, 1, 5, 3, 1]

    async def scenario() -> list[Tensors]:
        first = await hold_worker(batcher, fake)
        waiting = await queue_behind(batcher, [rows(tag, n) for tag, n in enumerate(sizes, start=1)])
        fake.gate.set()
        await first
        return await asyncio.gather(*waiting)

    results = run(scenario)
    assert fake.sizes == [1, sum(sizes)]
    for tag, (count, result) in enumerate(zip(sizes, results, strict=True), start=1):
        np.testing.assert_array_equal(result["x"], rows(tag, count)["x"] * 2)


def test_texts_of_different_lengths_are_padded_with_the_pad_id_and_mask_zero(
    make_batcher: Callable[..., Any],
) -> None:
    batcher, fake = make_batcher(hold=True, pad_values={"input_ids": 7, "attention_mask": 0}, max_wait=0)
    short = {"input_ids": np.array([[11, 12, 13, 14]], np.int64), "attention_mask": np.array([[1, 1, 1, 1]])}
    long = {
        "input_ids": np.array([[21, 22, 23, 24, 25], [31, 32, 33, 34, 35]], np.int64),
        "attention_mask": np.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], np.int64),
    }

    async def scenario() -> list[Tensors]:
        first = asyncio.ensure_future(batcher.run(short))
        assert await asyncio.to_thread(fake.entered.wait, WAIT)
        waiting = await queue_behind(batcher, [short, long])
        fake.gate.set()
        await first
        return await asyncio.gather(*waiting)

    got_short, got_long = run(scenario)
    batch = fake.batches[1]  # widths 4 and 5 are within WIDTH_SLACK: one run, padded to 5
    np.testing.assert_array_equal(
        batch["input_ids"], [[11, 12, 13, 14, 7], [21, 22, 23, 24, 25], [31, 32, 33, 34, 35]]
    )
    np.testing.assert_array_equal(
        batch["attention_mask"], [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    )
    np.testing.assert_array_equal(got_long["input_ids"], long["input_ids"] * 2)
    assert got_short["input_ids"].shape == (1, 5)  # the padded row is what the model saw
    assert fake.batches[0]["input_ids"].shape == (1, 4)  # alone: not padded


def test_texts_of_very_different_lengths_run_in_separate_groups(make_batcher: Callable[..., Any]) -> None:
    batcher, fake = make_batcher(hold=True, pad_values={"input_ids": 7, "attention_mask": 0}, max_wait=0)

    def texts(width: int, tag: int) -> Tensors:
        return {
            "input_ids": np.full((1, width), tag, np.int64),
            "attention_mask": np.ones((1, width), np.int64),
        }

    async def scenario() -> list[Tensors]:
        first = asyncio.ensure_future(batcher.run(texts(3, 1)))
        assert await asyncio.to_thread(fake.entered.wait, WAIT)
        waiting = await queue_behind(batcher, [texts(20, 2), texts(4, 3), texts(21, 4)])
        fake.gate.set()
        await first
        return await asyncio.gather(*waiting)

    results = run(scenario)
    widths = [batch["input_ids"].shape for batch in fake.batches[1:]]
    assert widths == [(1, 4), (2, 21)]  # 4 alone; 20 and 21 together: no text padded fivefold
    assert [int(r["input_ids"][0, 0]) for r in results] == [4, 6, 8]  # each its own rows (tag * 2)


def test_an_idle_quick_model_answers_inline_and_otherwise_queues(make_batcher: Callable[..., Any]) -> None:
    batcher, fake = make_batcher(max_wait=0, inline_below=0.001)
    batcher.run_seconds = 0.0001  # one row's run, as measured at warm-up

    async def scenario() -> list[Tensors]:
        alone = await batcher.run(rows(1))
        batcher.arriving += 1  # another request is being parsed: this one goes to the worker
        queued = await batcher.run(rows(2))
        batcher.arriving -= 1
        big = await batcher.run(rows(3, count=20))  # 20 rows x 0.1 ms is over the 1 ms threshold
        return [alone, queued, big]

    results = run(scenario)
    main = threading.current_thread().name
    assert fake.threads[0] == main and fake.threads[1] != main and fake.threads[2] != main
    for result, tag, count in zip(results, (1, 2, 3), (1, 1, 20), strict=True):
        np.testing.assert_array_equal(result["x"], rows(tag, count)["x"] * 2)


def test_a_full_queue_is_refused_with_queue_full(make_batcher: Callable[..., Any]) -> None:
    batcher, fake = make_batcher(hold=True, max_queue=2, max_wait=0)

    async def scenario() -> list[Tensors]:
        first = await hold_worker(batcher, fake)
        waiting = await queue_behind(batcher, [rows(1), rows(2)])
        with pytest.raises(QueueFull, match="2 requests are waiting.*limit 2") as refused:
            await batcher.run(rows(3))
        assert refused.value.status == 503
        fake.gate.set()
        await first
        return await asyncio.gather(*waiting)

    results = run(scenario)
    assert [float(result["x"][0, 0]) for result in results] == [200.0, 400.0]
    assert 300.0 not in fake.tags()


def test_a_timed_out_request_is_dropped_and_never_run(make_batcher: Callable[..., Any]) -> None:
    batcher, fake = make_batcher(hold=True, max_wait=0)

    async def scenario() -> Tensors:
        first = await hold_worker(batcher, fake)
        with pytest.raises(BatchTimeout, match="0.05 s") as late:
            await batcher.run(rows(1), timeout=0.05)
        assert late.value.status == 503
        fake.gate.set()
        await first
        return await batcher.run(rows(2))

    result = run(scenario)
    np.testing.assert_array_equal(result["x"], rows(2)["x"] * 2)
    assert fake.tags() == [0.0, 200.0]
    assert batcher.depth == 0


def test_a_failing_batch_is_rerun_one_request_at_a_time_so_only_the_bad_one_fails(
    make_batcher: Callable[..., Any],
) -> None:
    batcher, fake = make_batcher(hold=True, max_wait=0)

    async def scenario() -> tuple[list[Any], Tensors]:
        first = await hold_worker(batcher, fake)
        bad = {"x": np.array([[-1.0]], np.float32)}
        waiting = await queue_behind(batcher, [rows(1), bad, rows(2)])
        fake.gate.set()
        await first
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        return outcomes, await batcher.run(rows(3))

    outcomes, after = run(scenario)
    assert fake.sizes == [1, 3, 1, 1, 1, 1]  # the batch of three, then each alone
    good, failed, other = outcomes
    assert isinstance(failed, RuntimeError) and "negative input" in str(failed), outcomes
    np.testing.assert_array_equal(good["x"], rows(1)["x"] * 2)
    np.testing.assert_array_equal(other["x"], rows(2)["x"] * 2)
    np.testing.assert_array_equal(after["x"], rows(3)["x"] * 2)


def test_close_finishes_queued_work_then_stops(make_batcher: Callable[..., Any]) -> None:
    batcher, fake = make_batcher(hold=True, max_batch=1, max_wait=0)

    async def scenario() -> list[Tensors]:
        first = await hold_worker(batcher, fake)
        waiting = await queue_behind(batcher, [rows(1), rows(2)])
        closing = asyncio.ensure_future(asyncio.to_thread(batcher.close))
        await asyncio.sleep(0.05)
        assert not closing.done(), "close() returned while a batch was still running"
        fake.gate.set()
        results = await asyncio.gather(first, *waiting)
        await closing
        return results

    results = run(scenario)
    assert [float(result["x"][0, 0]) for result in results] == [0.0, 200.0, 400.0]
    assert fake.sizes == [1, 1, 1]
    assert batcher.depth == 0
