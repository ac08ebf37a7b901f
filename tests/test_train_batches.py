"""Batches of the bi-encoder trainer: no in-batch false negatives, and per-query sampling."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from embedstack.train.data import Group
from embedstack.train.embedder_batches import (
    contrastive_batches,
    judged_positives,
    per_query_groups,
)


def random_groups(rng: random.Random, n_queries: int, n_docs: int) -> list[Group]:
    """Queries judging 1 to 12 of a small shared pool of documents (topics overlap, as in
    NFCorpus), each pair with 0-2 negatives drawn from the same pool."""
    docs = [f"d{i}" for i in range(n_docs)]
    groups = []
    for q in range(n_queries):
        positives = rng.sample(docs, rng.randint(1, 12))
        for positive in positives:
            others = [d for d in docs if d not in positives]
            groups.append(Group(f"q{q}", positive, tuple(rng.sample(others, rng.randint(0, 2)))))
    return groups


@pytest.mark.parametrize("seed", range(20))
def test_batches_hold_no_judged_positive_of_another_query(seed: int) -> None:
    rng = random.Random(seed)
    groups = random_groups(rng, rng.randint(2, 30), rng.randint(15, 80))
    judged = judged_positives(groups)
    # the oracle: each query's judged positives, straight from the pairs
    oracle: dict[str, set[str]] = {}
    for g in groups:
        oracle.setdefault(g.query, set()).add(g.positive)
    assert judged == oracle
    size = rng.randint(2, 8)
    batches = contrastive_batches(groups, size, random.Random(seed), judged)
    assert Counter(g for b in batches for g in b) == Counter(groups)  # each group exactly once
    for batch in batches:
        assert 1 <= len(batch) <= size
        assert len({g.query for g in batch}) == len(batch)
        assert len({g.positive for g in batch}) == len(batch)
        for g in batch:
            for other in batch:
                if other is not g:  # no document of `other` is judged relevant to g's query
                    assert not oracle[g.query] & {other.positive, *other.negatives}


def test_without_judged_only_repeats_are_kept_apart() -> None:
    groups = [Group("q1", "a", ()), Group("q2", "b", ("a",)), Group("q1", "c", ())]
    plain = contrastive_batches(groups, 3, random.Random(0))
    assert sorted(len(b) for b in plain) == [1, 2]  # q1 twice cannot share a batch
    masked = contrastive_batches(groups, 3, random.Random(0), judged_positives(groups))
    # q2's negative "a" is q1's positive: no q1 group may sit beside it
    for batch in masked:
        queries = {g.query for g in batch}
        assert queries != {"q1", "q2"}


def test_per_query_groups_cycle_through_every_positive() -> None:
    groups = [Group("q", f"p{i}", ()) for i in range(5)] + [Group("r", "x", ())]
    seen: list[str] = []
    for epoch in range(3):
        chosen = per_query_groups(groups, 2, epoch, random.Random(7))
        counts = Counter(g.query for g in chosen)
        assert counts == {"q": 2, "r": 1}
        seen += [g.positive for g in chosen if g.query == "q"]
    assert set(seen) == {f"p{i}" for i in range(5)}  # 3 epochs x 2 cover all 5
    assert len(set(seen[:4])) == 4  # no positive repeats before the cycle ends
    again = [g.positive for g in per_query_groups(groups, 2, 1, random.Random(7))]
    assert again == [g.positive for g in per_query_groups(groups, 2, 1, random.Random(7))]


@pytest.mark.parametrize("seed", range(10))
def test_small_tail_batches_are_dropped(seed: int) -> None:
    rng = random.Random(seed)
    groups = random_groups(rng, 30, 25)  # 25 shared documents: many conflicts, a long tail
    judged = judged_positives(groups)
    every = contrastive_batches(groups, 8, random.Random(seed), judged)
    kept = contrastive_batches(groups, 8, random.Random(seed), judged, min_size=4)
    assert any(len(b) < 4 for b in every[1:])  # the tail exists without the bound
    assert kept == [every[0]] + [b for b in every[1:-1] if len(b) >= 4] + [every[-1]]
    assert all(len(b) >= 4 for b in kept[1:-1])
    one = contrastive_batches(groups[:1], 8, random.Random(seed), judged, min_size=4)
    assert one == [groups[:1]]  # an epoch is never empty
