"""Classification by logistic regression on embeddings, with MTEB's protocol.

MTEB's ``AbsTaskClassification`` (Muennighoff et al. 2023) trains a
``LogisticRegression(max_iter=100)`` on a few examples per label and scores it on the test
split, ``n_experiments`` times: for experiment ``i`` the training indices are shuffled once
more by a ``numpy.random.RandomState(seed)`` (so every experiment sees a different order of
the same, cumulatively shuffled list) and the first ``samples_per_label`` examples of each
label in that order are kept (undersampling). The reported scores are the means over the
experiments: accuracy (the main score), F1, precision and recall (macro and weighted), and for
two-label tasks the average precision of the predicted labels, as MTEB computes it.

Example:
    >>> import numpy as np
    >>> train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]], dtype=np.float32)
    >>> scores = classify(train, ["a", "a", "b", "b"], train, ["a", "a", "b", "b"])
    >>> scores["accuracy"]
    1.0
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from embedstack.encoders.base import TextEncoder
from embedstack.errors import InvalidInput, require
from embedstack.eval.tasks.formats import LabelledTexts
from embedstack.eval.tasks.options import TaskOptions, embed

__all__ = ["classify", "evaluate_classification", "fit_predict", "undersample"]

MAIN_METRIC = "accuracy"


def undersample(
    labels: Sequence[str], samples_per_label: int, n_experiments: int, seed: int
) -> list[list[int]]:
    """The training indices of each experiment, as MTEB draws them.

    Args:
        labels: Label of each training example.
        samples_per_label: Examples kept per label (fewer when a label has fewer).
        n_experiments: Experiments to draw for.
        seed: Seed of the ``RandomState`` that reshuffles the indices before each draw.

    Returns:
        ``n_experiments`` lists of indices into ``labels``, in their shuffled order.
    """
    order = list(range(len(labels)))
    draws = []
    for _ in range(n_experiments):
        np.random.RandomState(seed).shuffle(order)  # the same permutation, applied again
        taken: dict[str, int] = {}
        chosen = []
        for i in order:
            if taken.get(labels[i], 0) < samples_per_label:
                chosen.append(i)
                taken[labels[i]] = taken.get(labels[i], 0) + 1
        draws.append(chosen)
    return draws


def fit_predict(
    train: np.ndarray,
    train_labels: Sequence[str],
    test: np.ndarray,
    *,
    seed: int = 42,
    max_iter: int = 100,
) -> tuple[list[str], bool]:
    """Fit MTEB's logistic regression on ``train`` and predict a label for each ``test`` row.

    Args:
        train: ``(n_train, dim)`` float32 embeddings.
        train_labels: Their labels (at least two distinct).
        test: ``(n_test, dim)`` float32 embeddings.
        seed: The classifier's ``random_state``.
        max_iter: Iterations of the solver (lbfgs).

    Returns:
        ``(predicted labels, converged)``: ``converged`` is False when the solver stopped at
        ``max_iter``.
    """
    require("sklearn", "eval", "classification tasks")
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if len(set(train_labels)) < 2:
        raise InvalidInput(
            f"classification needs training examples of at least two labels, got "
            f"{sorted(set(train_labels))}"
        )
    model = LogisticRegression(max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(train, list(train_labels))
    converged = True
    for caught_warning in caught:  # only the convergence warning is turned into a score
        if issubclass(caught_warning.category, ConvergenceWarning):
            converged = False
        else:
            warnings.warn_explicit(
                caught_warning.message,
                caught_warning.category,
                caught_warning.filename,
                caught_warning.lineno,
            )
    return [str(p) for p in model.predict(test)], converged


def classify(
    train: np.ndarray,
    train_labels: Sequence[str],
    test: np.ndarray,
    test_labels: Sequence[str],
    *,
    seed: int = 42,
    max_iter: int = 100,
) -> dict[str, float]:
    """Fit a logistic regression on ``train`` and score its predictions on ``test``.

    Args:
        train: ``(n_train, dim)`` float32 embeddings.
        train_labels: Their labels (at least two distinct).
        test: ``(n_test, dim)`` float32 embeddings.
        test_labels: Their gold labels.
        seed: The classifier's ``random_state``.
        max_iter: Iterations of the solver (lbfgs).

    Returns:
        ``accuracy``, ``f1``, ``f1_weighted``, ``precision``, ``precision_weighted``,
        ``recall``, ``recall_weighted`` (``f1``/``precision``/``recall`` are macro averages;
        a label never predicted counts 0), ``ap`` (two-label tasks only) and ``converged``
        (1.0, or 0.0 when the solver stopped at ``max_iter``).
    """
    predicted, converged = fit_predict(train, train_labels, test, seed=seed, max_iter=max_iter)
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        f1_score,
        precision_score,
        recall_score,
    )

    gold = list(test_labels)
    scores: dict[str, float] = {"accuracy": float(accuracy_score(gold, predicted))}
    for name, function in (("f1", f1_score), ("precision", precision_score),
                           ("recall", recall_score)):  # fmt: skip
        for average, suffix in (("macro", ""), ("weighted", "_weighted")):
            value = function(gold, predicted, average=average, zero_division=0)
            scores[name + suffix] = float(value)
    if len(set(gold)) == 2:  # MTEB: AP of the predicted labels, the larger label positive
        positive = sorted(set(gold))[1]
        scores["ap"] = float(
            average_precision_score(
                [g == positive for g in gold], [p == positive for p in predicted]
            )
        )
    scores["converged"] = 1.0 if converged else 0.0
    return scores


def evaluate_classification(
    encoder: TextEncoder, data: tuple[LabelledTexts, LabelledTexts], options: TaskOptions
) -> dict[str, Any]:
    """Run MTEB's classification protocol; returns the mean scores over experiments.

    Returns:
        The means of :func:`classify`'s scores, ``accuracy_std``, ``scores_per_experiment``,
        ``n_train`` (distinct training examples used), ``n_not_converged`` and
        ``n_examples`` (evaluated examples).
    """
    train, test = data
    draws = undersample(train.labels, options.samples_per_label, options.n_experiments,
                        options.seed)  # fmt: skip
    used = sorted(set().union(*draws))
    position = {index: row for row, index in enumerate(used)}
    train_matrix = embed(encoder, [train.texts[i] for i in used], options.dim)
    test_matrix = embed(encoder, test.texts, options.dim)
    runs = []
    for draw in draws:
        runs.append(
            classify(
                train_matrix[[position[i] for i in draw]],
                [train.labels[i] for i in draw],
                test_matrix,
                test.labels,
                seed=options.seed,
                max_iter=options.max_iter,
            )
        )
    report: dict[str, Any] = {
        key: float(np.mean([run[key] for run in runs])) for key in runs[0] if key != "converged"
    }
    report["accuracy_std"] = float(np.std([run["accuracy"] for run in runs]))
    report["scores_per_experiment"] = [
        {k: v for k, v in run.items() if k != "converged"} for run in runs
    ]
    report["n_train"] = len(used)
    report["n_not_converged"] = sum(run["converged"] == 0.0 for run in runs)
    report["n_examples"] = len(test.texts)
    return report
