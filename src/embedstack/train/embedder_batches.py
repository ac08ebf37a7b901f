"""Batches of :func:`~embedstack.train.train_embedder`: no in-batch false negatives, and
each query weighed the same whatever it judges."""

from __future__ import annotations

import random
from collections.abc import Sequence

from embedstack.train.data import Group

__all__ = ["contrastive_batches", "judged_positives", "per_query_groups"]


def judged_positives(groups: Sequence[Group]) -> dict[str, set[str]]:
    """Each query text's judged positive texts, over every group of the training data."""
    judged: dict[str, set[str]] = {}
    for group in groups:
        judged.setdefault(group.query, set()).add(group.positive)
    return judged


def per_query_groups(
    groups: Sequence[Group], per_query: int, epoch: int, rng: random.Random
) -> list[Group]:
    """``per_query`` groups of every query for epoch ``epoch`` (all of them when it has no
    more), a different share each epoch: each query's groups are shuffled once (``rng``
    seeded the same for every epoch) and epoch ``e`` takes the next ``per_query`` in a
    cycle, so over epochs every judged positive is used.

    With one group per judged pair, a query that judges 1,363 documents (NFCorpus has one)
    weighs as much as 1,363 queries that judge one; nDCG@10 averages over queries, and the
    sentence-transformers MS MARCO recipe likewise samples one positive per query per epoch.

    Example:
        >>> gs = [Group("q", "a", ()), Group("q", "b", ()), Group("r", "c", ())]
        >>> [g.positive for g in per_query_groups(gs, 1, 0, random.Random(0))]
        ['a', 'c']
        >>> [g.positive for g in per_query_groups(gs, 1, 1, random.Random(0))]
        ['b', 'c']
    """
    by_query: dict[str, list[Group]] = {}
    for group in groups:
        by_query.setdefault(group.query, []).append(group)
    chosen: list[Group] = []
    for query in sorted(by_query):
        own = by_query[query]
        rng.shuffle(own)
        if len(own) <= per_query:
            chosen.extend(own)
            continue
        start = epoch * per_query
        chosen.extend(own[(start + i) % len(own)] for i in range(per_query))
    return chosen


def contrastive_batches(
    groups: Sequence[Group],
    batch_size: int,
    rng: random.Random,
    judged: dict[str, set[str]] | None = None,
    min_size: int = 1,
) -> list[list[Group]]:
    """Shuffled batches without in-batch false negatives.

    With in-batch negatives every document of a batch is a negative for every other query;
    a second group of the same query (another judged positive) or a repeated positive would
    be a false negative, so such a group waits for a later batch (sentence-transformers'
    ``NoDuplicatesBatchSampler``). With ``judged`` (query text -> its judged positive
    texts, :func:`judged_positives`) a group also waits when one of its documents is a
    judged positive of a query already in the batch, or when the batch already holds one of
    its own query's judged positives: where queries judge many documents on shared topics
    (NFCorpus), the plain rule leaves those in as negatives.

    The groups that conflict most are left for the last batches, which can hold one or two
    groups each; a step on such a batch has almost no negatives and a full learning rate
    (on NFCorpus they collapsed the model). A batch left under ``min_size`` groups by
    conflicts is therefore dropped with its groups; the first and the last batch (the
    natural remainder) are kept, so small data loses nothing to the bound.
    """
    judged = judged or {}
    pending = list(groups)
    rng.shuffle(pending)
    batches: list[list[Group]] = []
    while pending:
        batch: list[Group] = []
        seen: set[str] = set()
        docs: set[str] = set()  # every document (positive or negative) in the batch
        positives_of_batch: set[str] = set()  # judged positives of the batch's queries
        later: list[Group] = []
        for i, group in enumerate(pending):
            if len(batch) == batch_size:
                later.extend(pending[i:])
                break
            own = (group.positive, *group.negatives)
            fits = (
                group.query not in seen
                and group.positive not in seen
                and positives_of_batch.isdisjoint(own)
                and docs.isdisjoint(judged.get(group.query, ()))
            )
            if fits:
                batch.append(group)
                seen.update((group.query, group.positive))
                docs.update(own)
                positives_of_batch.update(judged.get(group.query, ()))
            else:
                later.append(group)
        if len(batch) >= min_size or not later or not batches:
            batches.append(batch)
        pending = later
    return batches
