"""The measurements of ``embedstack pick --task``: one task file, every candidate scored.

A candidate is a model at a dimension and a storage precision. Each model encodes the task's
distinct texts once (cached like the corpus vectors of a retrieval pick, keyed by the model
identity, how the texts are encoded and the exact texts); each dimension is a Matryoshka
truncation (:func:`embedstack.vectors.truncate`, re-normalized) and each precision is what
storing the vectors costs in quality: ``int8`` vectors are quantized with one calibration
over the candidate's vectors and dequantized, ``binary`` ones are their sign bits as
``+-1/sqrt(dim)``. The task's own evaluation (:mod:`embedstack.eval.tasks`) then runs on
those vectors unchanged, through :class:`StoredVectors`, so the quality column is exactly
the task's main score as ``embedstack eval --task`` computes it, except for clustering: one
k-means run (MTEB's legacy protocol, what ``eval`` reports) moves V-measure by tenths on a
small set, enough to crown a lucky candidate, so a clustering pick's ``v_measure`` is the
mean over :data:`CLUSTER_SEEDS` runs (as MTEB's ``ClusteringFast`` tasks average several
k-means runs), the same runs its significance test pairs over; the single run at the
task's seed is kept as ``v_measure_one_run``.

Besides the main score, each task gives the units its significance test pairs over:

* ``classification``: per test example, the share of the ``n_experiments`` classifiers
  (MTEB's seeded undersamples, identical for every candidate) that label it right; their
  mean is the mean accuracy.
* ``clustering``: per k-means seed (:data:`CLUSTER_SEEDS` seeds from the task's seed), the
  mean V-measure over the sets; their mean is the quality column.
* ``pair-classification``: the four similarity scores of every pair (a paired bootstrap
  over pairs, :mod:`~embedstack.eval.pick.task_stats`).
* ``reranking``: per sample, the average precision of its candidates; their mean is MAP.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from embedstack import vectors
from embedstack.errors import InvalidInput
from embedstack.eval.tasks.options import TaskOptions
from embedstack.vectorset import VectorSet

__all__ = [
    "CLUSTER_SEEDS",
    "TASK_UNITS",
    "StoredVectors",
    "TaskData",
    "load_task_data",
    "refuse_task_file",
    "score_candidate",
    "stored_precision",
]

CLUSTER_SEEDS = 10
"""k-means seeds per clustering candidate: the task's seed and the next nine."""

TASK_UNITS = {
    "classification": "test examples (each scored by the share of the seeded experiments' "
    "classifiers that label it right)",
    "clustering": f"k-means seeds ({CLUSTER_SEEDS}, each the mean V-measure over the sets)",
    "pair-classification": "pairs (paired bootstrap: resampled with replacement)",
    "reranking": "samples (each query's average precision over its candidates)",
}


@dataclass(frozen=True)
class TaskData:
    """One task file, read and checked.

    Attributes:
        task: the task type.
        path: what the user passed.
        name: a short name (the file or folder name).
        split: the evaluated split.
        payload: what the task's reader returned (:mod:`embedstack.eval.tasks.formats`).
        texts: per encoding kind (``text``, or ``query`` / ``document`` for reranking) the
            distinct texts to encode, in first-seen order.
        n_examples: evaluated examples (test examples, clustered texts, pairs, samples).
        n_train: distinct training examples the classifiers use (classification), else None.
        latency_kind: the kind whose texts are timed one at a time.
    """

    task: str
    path: Path
    name: str
    split: str
    payload: Any
    texts: dict[str, list[str]]
    n_examples: int
    n_train: int | None
    latency_kind: str


def _is_beir(root: Path) -> bool:
    return root.is_dir() and (root / "corpus.jsonl").is_file()


def load_task_data(path: str | Path, task: str, options: TaskOptions) -> TaskData:
    """Read ``path`` as a ``task`` file (the format of ``embedstack eval --task``).

    Raises:
        InvalidInput: a BEIR folder (retrieval data), no such path, or a malformed file (the
            message names the file and line).
    """
    from embedstack.eval.tasks import formats
    from embedstack.eval.tasks.classification import undersample

    root = Path(path)
    if _is_beir(root):
        raise InvalidInput(
            f"{root} is a BEIR folder (corpus.jsonl): retrieval data, not a {task} file; drop "
            f"--task to pick for retrieval, or pass the {task} .jsonl file (or a folder of "
            "<split>.jsonl)"
        )
    if not root.exists():
        raise InvalidInput(f"{root}: no such file or folder")
    texts: dict[str, list[str]]
    n_train = None
    kind = "text"
    if task == "classification":
        train, test = formats.read_classification(root, options.split)
        draws = undersample(train.labels, options.samples_per_label, options.n_experiments,
                            options.seed)  # fmt: skip
        used = sorted(set().union(*draws))
        n_train = len(used)
        texts = {"text": [train.texts[i] for i in used] + test.texts}
        payload: Any = (train, test)
        n_examples = len(test.texts)
    elif task == "clustering":
        payload = formats.read_clustering(root, options.split)
        texts = {"text": [t for one in payload for t in one.texts]}
        n_examples = len(texts["text"])
    elif task == "pair-classification":
        payload = formats.read_pairs(root, options.split)
        texts = {"text": payload.sentences1 + payload.sentences2}
        n_examples = len(payload.labels)
    elif task == "reranking":
        payload = formats.read_reranking(root, options.split)
        kept = [s for s in payload if s.positive and s.negative]
        texts = {
            "query": [q for s in kept for q in s.queries],
            "document": [d for s in kept for d in (*s.positive, *s.negative)],
        }
        n_examples, kind = len(kept), "query"
    else:
        raise InvalidInput(f"unknown task {task!r}")
    distinct = {k: list(dict.fromkeys(v)) for k, v in texts.items()}
    if not any(distinct.values()):
        raise InvalidInput(f"{root}: nothing to evaluate for split {options.split!r}")
    name = root.stem if root.is_file() else root.name
    return TaskData(task, root, name, options.split, payload, distinct, n_examples, n_train, kind)


def _guess(obj: dict[str, Any]) -> str | None:
    if "id" in obj or "_id" in obj:
        return None  # a corpus line (documents have ids)
    if "sentence1" in obj and "sentence2" in obj:
        return "pair-classification"
    if "query" in obj and ("positive" in obj or "negative" in obj):
        return "reranking"
    if "text" in obj and "label" in obj:
        return "clustering" if "set" in obj else "classification (or clustering)"
    return None


def refuse_task_file(path: str | Path) -> None:
    """Refuse a task file given to a retrieval pick: its first line names the task.

    Raises:
        InvalidInput: ``path`` (a ``.jsonl`` file, or a folder of ``<split>.jsonl`` task files
            without ``corpus.jsonl``) holds labelled task examples, not a corpus.
    """
    root = Path(path)
    file = root
    if root.is_dir() and not _is_beir(root):
        found = sorted(root.glob("*.jsonl"))
        if not found or not all(f.stem in ("train", "test", "dev", "validation") for f in found):
            return
        file = found[0]
    if not (file.is_file() and file.suffix == ".jsonl"):
        return
    with file.open(encoding="utf-8", errors="replace") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                return  # the corpus reader names the bad line
            guess = _guess(obj) if isinstance(obj, dict) else None
            if guess is not None:
                fields = ", ".join(sorted(obj))
                raise InvalidInput(
                    f"{file}:{lineno}: a {guess} example ({fields}), not a corpus document: "
                    f"pass --task {guess.split()[0]} to pick for that use (retrieval needs a "
                    'BEIR folder or a corpus of {"id", "text"} lines)'
                )
            return


def stored_precision(matrix: np.ndarray, precision: str) -> tuple[np.ndarray, float]:
    """``(vectors as stored at precision, read back as float32; bytes per vector)``.

    The int8 calibration is computed over ``matrix`` (every vector of the candidate), as an
    index calibrates over what it holds; bytes per vector are
    :attr:`~embedstack.vectorset.VectorSet.nbytes` over the vectors (calibration included).
    """
    stored = VectorSet.from_float(matrix, precision, rescore=False)
    size = stored.nbytes / max(len(stored), 1)
    if precision == "float32":
        return matrix, size
    if precision == "int8":
        calibration = stored.calibration
        if calibration is None:  # pragma: no cover - from_float always sets it
            raise InvalidInput("int8 vectors without calibration")
        return vectors.dequantize_int8(stored.data, calibration), size
    signs = vectors.unpack_binary(stored.data, matrix.shape[1])
    return signs / np.float32(np.sqrt(matrix.shape[1])), size


class StoredVectors:
    """A :class:`~embedstack.encoders.base.TextEncoder` that returns prepared vectors.

    ``encode`` serves the ``text`` kind, ``encode_queries`` / ``encode_documents`` the
    ``query`` / ``document`` kinds; a text it was not given is an error.
    """

    def __init__(
        self, name: str, matrices: dict[str, np.ndarray], texts: dict[str, list[str]]
    ) -> None:
        self.name = name
        self.model_id = name
        self._matrices = matrices
        self._rows = {kind: {t: i for i, t in enumerate(ts)} for kind, ts in texts.items()}
        self.dim = next(iter(matrices.values())).shape[1]

    def _lookup(self, kind: str, texts: Any) -> np.ndarray:
        rows = self._rows[kind]
        return self._matrices[kind][[rows[t] for t in texts]]

    def encode(self, texts: Any) -> np.ndarray:
        return self._lookup("text", list(texts))

    def encode_queries(self, texts: Any) -> np.ndarray:
        return self._lookup("query", list(texts))

    def encode_documents(self, texts: Any) -> np.ndarray:
        return self._lookup("document", list(texts))


def _metrics(report: dict[str, Any], main: str) -> dict[str, float]:
    """The scalar scores of a task report, main metric first (counts left out)."""
    keep = {k: float(v) for k, v in report.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and not k.startswith("n_")
            and not k.startswith(("cosine_", "dot_", "euclidean_", "manhattan_"))}  # fmt: skip
    return {main: keep.pop(main), **keep}


def score_candidate(
    data: TaskData, encoder: StoredVectors, options: TaskOptions
) -> tuple[dict[str, float], np.ndarray, dict[str, Any]]:
    """Run the task on ``encoder``'s vectors.

    Returns:
        ``(metrics, units, extra)``: the task's scores (main metric first), the scores its
        significance test pairs over (module docstring; ``(4, n_pairs)`` similarity scores
        for pair classification) and what else pick.json records (per-experiment accuracy,
        per-seed V-measure).
    """
    from embedstack.eval.tasks import MAIN_METRICS

    main = MAIN_METRICS[data.task]
    enc = cast(Any, encoder)
    extra: dict[str, Any] = {}
    if data.task == "classification":
        from embedstack.eval.tasks.classification import (
            evaluate_classification,
            fit_predict,
            undersample,
        )

        train, test = data.payload
        report = evaluate_classification(enc, data.payload, options)
        draws = undersample(train.labels, options.samples_per_label, options.n_experiments,
                            options.seed)  # fmt: skip
        test_matrix = encoder.encode(test.texts)
        gold = np.asarray(test.labels)
        right = np.zeros((len(draws), len(gold)))
        for row, draw in enumerate(draws):
            predicted, _ = fit_predict(
                encoder.encode([train.texts[i] for i in draw]),
                [train.labels[i] for i in draw],
                test_matrix,
                seed=options.seed,
                max_iter=options.max_iter,
            )
            right[row] = np.asarray(predicted) == gold
        units = right.mean(axis=0)
        extra["accuracy_per_experiment"] = [s["accuracy"] for s in report["scores_per_experiment"]]
    elif data.task == "clustering":
        from embedstack.eval.tasks.clustering import evaluate_clustering

        report = evaluate_clustering(enc, data.payload, options)
        per_seed = [report["v_measure"]]
        for i in range(1, CLUSTER_SEEDS):
            again = dataclasses.replace(options, seed=options.seed + i)
            per_seed.append(evaluate_clustering(enc, data.payload, again)["v_measure"])
        units = np.asarray(per_seed)
        extra["v_measure_per_seed"] = per_seed
        report = {main: float(units.mean()), "v_measure_one_run": report[main],
                  **{k: v for k, v in report.items() if k != main}}  # fmt: skip
    elif data.task == "pair-classification":
        from embedstack.eval.pick.task_stats import similarity_scores
        from embedstack.eval.tasks.pair_classification import evaluate_pair_classification

        pairs = data.payload
        report = evaluate_pair_classification(enc, pairs, options)
        units = similarity_scores(
            encoder.encode(pairs.sentences1), encoder.encode(pairs.sentences2)
        )
    else:
        from embedstack.eval.tasks.reranking import evaluate_reranking, score_samples

        report = evaluate_reranking(enc, data.payload, options)
        aps, _, _ = score_samples(enc, data.payload, options)
        units = np.asarray(aps)
    return _metrics(report, main), units, extra
