"""Micro-batching, length grouping and bounded queues of the server, without HTTP."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from embedstack.server.batching import EmbedResult, Gate, MicroBatcher, Overloaded
from embedstack.server.models import length_groups


class FakeModel:
    """Row i of a call is ``[len(text), call number]``; records every call's texts."""

    def __init__(self, *, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on
        self.release = asyncio.Event()
        self.release.set()
        self.started = asyncio.Event()  # set when a call reaches the model

    async def run(self, texts: list[str]) -> EmbedResult:
        self.started.set()
        await self.release.wait()
        self.calls.append(list(texts))
        if self.fail_on is not None and self.fail_on in texts:
            raise ValueError(f"cannot embed {self.fail_on!r}")
        n = len(self.calls)
        vectors = np.array([[len(t), n] for t in texts], dtype=np.float32)
        return vectors, np.array([len(t) for t in texts], dtype=np.int64)


async def _settled() -> None:
    """Return once every task scheduled before this call has run up to the point where it
    waits (asyncio runs ready callbacks in FIFO order): an event, not a timed sleep."""
    done = asyncio.Event()
    asyncio.get_running_loop().call_soon(done.set)
    await done.wait()


def _batcher(model: FakeModel, **options: object) -> MicroBatcher:
    defaults: dict[str, object] = dict(
        max_texts=64, max_tokens=10_000, max_wait_s=0.05, queue_size=100, merge=True
    )
    defaults.update(options)
    return MicroBatcher("fake", model.run, **defaults)  # type: ignore[arg-type]


def test_concurrent_requests_share_one_call_and_get_their_own_rows() -> None:
    async def main() -> None:
        model = FakeModel()
        seen: list[tuple[int, int]] = []
        batcher = MicroBatcher("fake", model.run, max_texts=64, max_tokens=10_000,
                               max_wait_s=0.05, queue_size=100,
                               on_batch=lambda t, r: seen.append((t, r)))  # fmt: skip
        requests = [["a" * i] if i % 2 else ["a" * i, "b"] for i in range(1, 11)]
        results = await asyncio.gather(*(batcher.submit(r, tokens=1) for r in requests))
        assert len(model.calls) == 1 and seen == [(15, 10)]
        for texts, (vectors, tokens) in zip(requests, results, strict=True):
            assert vectors[:, 0].tolist() == [len(t) for t in texts]
            assert tokens.tolist() == [len(t) for t in texts]
        await batcher.aclose()

    asyncio.run(main())


def test_batches_respect_text_and_token_budgets() -> None:
    async def main() -> None:
        model = FakeModel()
        batcher = _batcher(model, max_texts=4)
        results = await asyncio.gather(*(batcher.submit([f"t{i}"], tokens=1) for i in range(10)))
        assert [len(c) for c in model.calls] == [4, 4, 2]
        assert [c for call in model.calls for c in call] == [f"t{i}" for i in range(10)]
        assert all(r[0].shape == (1, 2) for r in results)
        model.calls.clear()
        by_tokens = _batcher(model, max_tokens=25)
        await asyncio.gather(*(by_tokens.submit([f"u{i}"], tokens=10) for i in range(5)))
        assert [len(c) for c in model.calls] == [2, 2, 1]
        model.calls.clear()
        big = await by_tokens.submit(["x"] * 3, tokens=1_000)  # over budget alone: runs alone
        assert big[0].shape == (3, 2) and model.calls == [["x"] * 3]
        await batcher.aclose()
        await by_tokens.aclose()

    asyncio.run(main())


def test_without_merging_every_request_is_its_own_call() -> None:
    async def main() -> None:
        model = FakeModel()
        batcher = _batcher(model, merge=False)
        await asyncio.gather(*(batcher.submit([f"t{i}"], tokens=1) for i in range(6)))
        assert [len(c) for c in model.calls] == [1] * 6
        await batcher.aclose()

    asyncio.run(main())


def test_a_failing_request_does_not_fail_the_others() -> None:
    async def main() -> None:
        model = FakeModel(fail_on="bad")
        batcher = _batcher(model)
        outcomes = await asyncio.gather(
            batcher.submit(["good"], tokens=1),
            batcher.submit(["bad"], tokens=1),
            batcher.submit(["fine"], tokens=1),
            return_exceptions=True,
        )
        assert isinstance(outcomes[1], ValueError)
        assert not isinstance(outcomes[0], BaseException) and outcomes[0][0][0, 0] == 4
        assert not isinstance(outcomes[2], BaseException) and outcomes[2][0][0, 0] == 4
        assert model.calls[0] == ["good", "bad", "fine"]  # merged, then retried alone
        ok = await batcher.submit(["after"], tokens=1)  # the worker survived
        assert ok[0][0, 0] == 5
        await batcher.aclose()

    asyncio.run(main())


def test_full_queue_refuses_at_once_and_cancelled_requests_are_dropped() -> None:
    async def main() -> None:
        model = FakeModel()
        model.release.clear()
        batcher = _batcher(model, queue_size=2, merge=False)
        first = asyncio.ensure_future(batcher.submit(["first"], tokens=1))
        await model.started.wait()  # the worker took it and waits for the model
        queued = [asyncio.ensure_future(batcher.submit([f"q{i}"], tokens=1)) for i in range(2)]
        await _settled()  # both are in the queue
        with pytest.raises(Overloaded, match="2 requests waiting"):
            await batcher.submit(["one too many"], tokens=1)
        assert batcher.depth() == 2
        queued[0].cancel()  # the client went away
        model.release.set()
        await first
        await queued[1]
        assert model.calls == [["first"], ["q1"]]
        await batcher.aclose()

    asyncio.run(main())


def test_gate_bounds_concurrency_and_waiting() -> None:
    async def main() -> None:
        gate = Gate("g", limit=1, queue_size=1)
        release = asyncio.Event()
        active = 0
        peak = 0

        async def hold() -> None:
            nonlocal active, peak
            async with gate.slot():
                active += 1
                peak = max(peak, active)
                await release.wait()
                active -= 1

        tasks = [asyncio.ensure_future(hold()) for _ in range(2)]
        await _settled()  # one holds the slot, the other waits for it
        assert gate.depth() == 1
        with pytest.raises(Overloaded):
            async with gate.slot():
                pass
        release.set()
        await asyncio.gather(*tasks)
        assert peak == 1 and gate.depth() == 0

    asyncio.run(main())


@given(
    counts=st.lists(st.integers(min_value=1, max_value=512), max_size=80),
    ratio=st.floats(min_value=0.1, max_value=1.0),
)
def test_length_groups_partition_by_similar_length(counts: list[int], ratio: float) -> None:
    array = np.array(counts, dtype=np.int64)
    groups = length_groups(array, ratio)
    flat = [int(i) for g in groups for i in g]
    assert sorted(flat) == list(range(len(counts)))  # every position exactly once
    assert [int(array[i]) for i in flat] == sorted(counts, reverse=True)  # longest first
    for group in groups:
        assert array[group].min() >= ratio * array[group].max()


def test_merged_call_equals_one_encode_documents_call() -> None:
    from embedstack import HashEncoder
    from embedstack.server.models import _embed

    class Counting(HashEncoder):  # a tokenizer-like count makes the groups differ
        def count_tokens(self, texts: list[str]) -> np.ndarray:
            return np.array([len(t.split()) for t in texts], dtype=np.int64)

    texts = ["one", "two words", "a b c d e f g h", "x y", "p q r s t u v w x y z"]
    encoder = Counting(32)
    vectors, tokens = _embed(encoder, "document", texts)
    assert np.array_equal(vectors, encoder.encode_documents(texts))
    assert tokens.tolist() == [1, 2, 8, 2, 11]
