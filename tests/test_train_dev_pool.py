"""The embedder trainer's dev pool: bounded, judged documents first, qrels kept consistent."""

from __future__ import annotations

import random

import pytest

from embedstack.train.embedder_data import dev_pool


def _judged(rng: random.Random, queries: int, per_query: int) -> dict[str, dict[str, int]]:
    return {f"q{i}": {f"d{rng.randrange(5000)}": rng.choice((1, 2)) for _ in range(per_query)}
            for i in range(queries)}  # fmt: skip


@pytest.mark.parametrize("per_query", [1, 3, 40])
@pytest.mark.parametrize("size", [10, 100, 300])
def test_pool_is_bounded_and_judged_first(per_query: int, size: int) -> None:
    rng = random.Random(per_query * 1000 + size)
    judged = _judged(rng, 25, per_query)
    all_judged = {d for j in judged.values() for d in j}
    negatives = [f"n{i}" for i in range(60)]
    rest = [f"r{i}" for i in range(1000)]
    pool = list(dev_pool(judged, negatives, rest, size))
    assert len(pool) == len(set(pool)) == min(size, len(all_judged) + 1060)
    kept = [d for d in pool if d in all_judged]
    assert pool[: len(kept)] == kept  # judged documents come first
    if len(all_judged) <= size:
        assert set(kept) == all_judged
    else:  # they do not fit: half the pool, and every query keeps its most relevant one
        assert len(kept) == size // 2
        if size // 2 >= len(judged):
            for j in judged.values():
                best = max(j.values())
                assert any(j[d] == best for d in kept if d in j)
    after = pool[len(kept) :]
    n_neg = sum(d.startswith("n") for d in after)
    assert after[:n_neg] == negatives[:n_neg]  # then negatives, in the given order
    assert after[n_neg:] == rest[: len(after) - n_neg]


def test_smaller_pool_is_a_prefix_while_judged_fit() -> None:
    judged = _judged(random.Random(0), 10, 2)
    args = ([f"n{i}" for i in range(30)], [f"r{i}" for i in range(500)])
    small, large = list(dev_pool(judged, *args, 50)), list(dev_pool(judged, *args, 400))
    assert large[: len(small)] == small


def test_documents_judged_by_several_queries_count_once() -> None:
    shared = {f"d{i}": 1 for i in range(30)}  # 4 queries judge the same 30 documents
    judged = {f"q{i}": dict(shared) for i in range(4)}
    pool = list(dev_pool(judged, ["n0"], [f"r{i}" for i in range(50)], 40))
    assert set(pool[:30]) == set(shared)  # 30 distinct fit in 40: all kept, not half the pool
    assert pool[30:] == ["n0"] + [f"r{i}" for i in range(9)]
