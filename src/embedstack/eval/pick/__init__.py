"""``embedstack pick``: choose a model, dimension, precision and retrieval mode on evidence.

Measures every candidate configuration on your data (judged BEIR qrels, or a clearly
labelled proxy built from the corpus), tests which differences are real (paired
randomization test), finds the Pareto front of quality, p99 latency and bytes per document,
and recommends the configuration to deploy within your budgets. Modules: ``candidates``
(grid, model discovery), ``data`` (judged / proxy), ``plan`` (corpus encodings fitted to
``--time-budget-min``: float32, guarded int8 or not measured), ``measure``, ``stats``,
``prices``, ``recommend`` and ``run`` (orchestration, ``pick.json``).

Example:
    >>> from embedstack.eval.pick import PickOptions, run_pick
    >>> result = run_pick("../shared/datasets/scifact", "pick-out",
    ...                   PickOptions(models=("all-MiniLM-L6-v2",)))  # doctest: +SKIP
"""

from __future__ import annotations

from embedstack.eval.pick.candidates import CandidateSpec, PickOptions, build_grid, select_models
from embedstack.eval.pick.data import PickData, load_pick_data
from embedstack.eval.pick.prices import Prices, load_prices
from embedstack.eval.pick.run import run_pick, write_pick
from embedstack.eval.pick.stats import holm, paired_randomization, pareto_front

__all__ = [
    "CandidateSpec",
    "PickData",
    "PickOptions",
    "Prices",
    "build_grid",
    "holm",
    "load_pick_data",
    "load_prices",
    "paired_randomization",
    "pareto_front",
    "run_pick",
    "select_models",
    "write_pick",
]
