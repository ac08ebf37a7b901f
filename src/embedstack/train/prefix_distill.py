"""Matryoshka training with self-distillation: each truncation also learns the full
dimension's in-batch ranking.

sentence-transformers' ``MatryoshkaLoss`` trains every prefix on the labels alone: at 64 dims
the contrastive loss only asks that the positive beat the batch's other documents. The full
dimension knows more than that, namely how close each of those other documents is. Adding a
KL term that pulls each prefix's softmax over the batch towards the full dimension's
(detached, so the teacher is not pulled back) hands that knowledge down. This is the
alignment term of 2D Matryoshka sentence embeddings (Li et al. 2024, "2DMSE") and of
Starbucks (Zhuang et al. 2024), applied across dimensions of the same layer, and the
distillation of Hinton et al. (2015) with the full model as its own teacher.

The term reuses the embeddings ``MatryoshkaLoss`` computes: the model's forward is wrapped
once so the full-dimension embeddings of each column are kept as they pass; nothing is
encoded twice.

Example:
    >>> from embedstack.train.prefix_distill import PrefixDistillation
    >>> PrefixDistillation.__call__.__doc__.splitlines()[0]
    "``MatryoshkaLoss``'s value plus the weighted KL of every truncation."
"""

from __future__ import annotations

from typing import Any

__all__ = ["PrefixDistillation"]


class PrefixDistillation:
    """``MatryoshkaLoss`` over an MNRL loss, plus ``weight`` x KL(full || prefix) for each
    truncated dimension, over each query's softmax on the step's documents (positives, the
    other queries' positives and the hard negatives), both at similarity ``scale``.

    Args:
        torch: The torch module.
        model: The sentence-transformers model being trained.
        matryoshka: sentence-transformers' ``MatryoshkaLoss`` wrapping a (non-cached)
            ``MultipleNegativesRankingLoss``.
        dims: The trained dimensions, full first.
        weight: The KL term's weight for each truncation.
        scale: 1 / temperature of both softmaxes (MNRL's scale).
    """

    def __init__(
        self, torch: Any, model: Any, matryoshka: Any, dims: list[int], weight: float, scale: float
    ) -> None:
        self._torch = torch
        self.model = model
        self.matryoshka = matryoshka
        self.dims = list(dims)
        self.weight = float(weight)
        self.scale = float(scale)
        self.last_kl: float | None = None
        """The KL part of the last step's loss (for tests and logs)."""

    def __call__(self, features: list[dict[str, Any]], labels: Any) -> Any:
        """``MatryoshkaLoss``'s value plus the weighted KL of every truncation."""
        torch = self._torch
        functional = torch.nn.functional
        full: list[Any] = []
        forward = self.model.forward

        def keep(columns: dict[str, Any]) -> dict[str, Any]:
            out = forward(columns)
            full.append(out["sentence_embedding"])  # MatryoshkaLoss replaces, not edits, it
            return out

        self.model.forward = keep
        try:
            loss = self.matryoshka(features, labels)
        finally:
            self.model.forward = forward
        # MNRL embeds the query column alone, then the document columns (merged into one
        # forward when they pad alike): the first kept tensor is the queries, the rest the
        # documents, in an order both softmaxes share.
        rows = [len(f["input_ids"]) for f in features if "input_ids" in f]
        kept = [len(t) for t in full]
        counted = len(rows) == len(features)
        if not kept or counted and (kept[0], sum(kept[1:])) != (rows[0], sum(rows[1:])):
            raise RuntimeError(f"kept {kept} embeddings for columns of {rows} texts")
        queries, documents = full[0].float(), torch.cat(full[1:]).float()
        with torch.no_grad():
            teacher = functional.softmax(self._logits(queries, documents, self.dims[0]), dim=-1)
        kl = queries.new_zeros(())
        for dim in self.dims[1:]:
            student = functional.log_softmax(self._logits(queries, documents, dim), dim=-1)
            kl = kl + functional.kl_div(student, teacher, reduction="batchmean")
        self.last_kl = float(kl.detach())
        return loss + self.weight * kl

    def _logits(self, queries: Any, documents: Any, dim: int) -> Any:
        normalize = self._torch.nn.functional.normalize
        q = normalize(queries[:, :dim], dim=-1)
        d = normalize(documents[:, :dim], dim=-1)
        return self.scale * q @ d.T
