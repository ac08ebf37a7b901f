"""The task-specific parts of a ``pick --task`` recommendation: mode, prefix, evaluation plan.

The model and dimension parts and the rule that chooses the candidate are those of
:mod:`~embedstack.eval.pick.recommend`; what differs for a classification, clustering,
pair-classification or reranking use is what the vectors are used *with* (no retrieval
mode applies), how the texts are encoded (MTEB encodes the inputs of classification,
clustering and pair classification without a prefix; reranking with the model's query and
document prefixes) and how to keep evaluating.
"""

from __future__ import annotations

from typing import Any

from embedstack.eval.pick.recommend import unresolved_deltas

__all__ = ["USES", "task_parts"]

USES = {
    "classification": "a logistic regression trained on the embeddings (MTEB's protocol: "
    "{n_experiments} classifiers on {samples_per_label} examples per label)",
    "clustering": "mini-batch k-means on the embeddings, scored by V-measure (MTEB's protocol)",
    "pair-classification": "a threshold on the best of cosine, dot, Euclidean and Manhattan "
    "similarity (MTEB's protocol)",
    "reranking": "each query's candidates ordered by cosine similarity (MTEB's protocol)",
}


def task_parts(
    task: str,
    chosen: dict[str, Any],
    cands: list[dict[str, Any]],
    context: dict[str, Any],
    spec: dict[str, Any],
    main: str,
) -> dict[str, Any]:
    """``mode``, ``prefix`` and ``evaluation_plan`` of the recommendation for ``task``.

    Args:
        chosen: the recommended candidate (a pick.json candidate).
        cands: every candidate, with ``significance`` set.
        context: ``n_queries`` (evaluated examples), ``unit`` (what they are),
            ``task_options`` (the :class:`~embedstack.eval.tasks.options.TaskOptions` as a
            dict) and ``test_short``.
        spec: the chosen model's pick.json entry.
        main: the main metric.
    """
    settings = context.get("task_options", {})
    use = USES[task].format(
        n_experiments=settings.get("n_experiments", "?"),
        samples_per_label=settings.get("samples_per_label", "?"),
    )
    mode = {
        "mode": chosen["mode"],
        "reason": f"dense embeddings used with {use}; retrieval modes (BM25, hybrid) do not "
        f"apply to {task}.",
    }
    query = spec.get("query_prefix", "") or ""
    document = spec.get("document_prefix", "") or ""
    if task == "reranking":
        prefix = {
            "query_prefix": query,
            "document_prefix": document,
            "reason": "queries and candidates are encoded with the model's own prefixes "
            "(encode_queries / encode_documents), as MTEB's reranking does"
            if query or document
            else "the model was trained without prefixes",
        }
    else:
        prefix = {
            "query_prefix": "",
            "document_prefix": "",
            "reason": f"MTEB encodes {task} inputs without a prefix (encode()); measured "
            "that way here"
            + (
                f" although the model has retrieval prefixes ({query!r} / {document!r}): "
                "if your texts are queries or passages, measure with them too"
                if query or document
                else ""
            ),
        }
    n, unit = context["n_queries"], context.get("unit", "examples")
    plan = []
    unresolved = unresolved_deltas(cands)
    if unresolved:
        plan.append(
            f"With {n} {unit}, {main} differences up to {max(unresolved):.4f} were not "
            f"significant here ({context.get('test_short', 'paired test')}): label more "
            "examples to resolve smaller ones."
        )
    plan.append(
        f"Keep these {n} labelled {unit} as a fixed regression set; re-run `embedstack pick "
        f"--task {task}` when the model, the labels or the input distribution changes, and "
        "switch only on a significant difference."
    )
    plan.append(
        "Latency is the encoding of one text at a time on this machine; re-measure p99 on "
        "the serving hardware with your real text lengths."
    )
    plan.append(f"Monitor {main} on the regression set and the encoding p99 in production.")
    return {"mode": mode, "prefix": prefix, "evaluation_plan": plan}
