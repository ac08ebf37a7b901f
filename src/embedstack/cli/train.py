"""``embedstack train ...``: thin wrappers over :mod:`embedstack.train`.

The options are not declared here: each command's parameters are built from the fields of
its config (:mod:`embedstack.train.config`: default, help, flag), so ``train reranker`` and
``train colbert`` share the options of :class:`~embedstack.train.config.TrainConfig` and the
CLI cannot drift from the library.

A SIGTERM while a command runs unwinds like Ctrl-C (the trainers' clean-up runs: ``train
embedder`` removes its temporary folder beside --out) and exits 143 (128 + SIGTERM).
"""

from __future__ import annotations

import contextlib
import inspect
import signal
import threading
import typing
from collections.abc import Callable, Iterator
from dataclasses import MISSING
from typing import Annotated, Any

import typer

from embedstack.cli.app import app, err, out
from embedstack.train.config import ColbertConfig, RerankerConfig, TrainConfig, cli_fields, flag
from embedstack.train.embedder_config import EmbedderConfig

train_app = typer.Typer(help="Train models on your own judgements.", no_args_is_help=True)
app.add_typer(train_app, name="train")


def _parameters(config: type[TrainConfig]) -> list[inspect.Parameter]:
    """One typer parameter per CLI field of ``config``, in declaration order."""
    hints = typing.get_type_hints(config)
    params = []
    for spec in cli_fields(config):
        kind = spec.metadata.get("cli_type") or hints[spec.name]
        if spec.metadata.get("argument"):
            info: Any = typer.Argument(help=spec.metadata["help"])
        else:
            named = (flag(spec),) if spec.metadata.get("cli") else ()  # typer names the rest
            info = typer.Option(*named, help=spec.metadata["help"])
        default = inspect.Parameter.empty if spec.default is MISSING else spec.default
        params.append(inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY,
                                        annotation=Annotated[kind, info],
                                        default=default))  # fmt: skip
    return params


class _Terminated(SystemExit):
    """SIGTERM, raised in the main thread so that ``finally`` blocks run."""


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into :class:`_Terminated` (exit code 143) while the block runs; a second
    SIGTERM is ignored so that it cannot cut the clean-up short."""
    if threading.current_thread() is not threading.main_thread():  # only it takes signals
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except _Terminated:
        err.print("terminated")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _command(name: str, config: type[TrainConfig], trainer: Callable[[Any], Any], doc: str) -> None:
    """Register ``train <name>``: its options are ``config``'s CLI fields; it builds the
    config, runs ``trainer`` on it and prints the result."""

    def command(**values: Any) -> None:
        miner = values.get("miner")
        if isinstance(miner, str) and miner.lower() == "none":
            values["miner"] = None
        with _sigterm_unwinds():
            result = trainer(config(**values))
        err.print(
            f"mined negatives in {result.mining_seconds:.0f} s ({result.groups} groups, "
            f"{result.dropped_negatives} likely false negatives dropped)"
        )
        for line in getattr(result, "report", lambda: [])():
            err.print(line)
        out.print(
            f"trained {result.steps} steps on {result.pairs} pairs in {result.seconds:.0f} s "
            f"({result.pairs_per_second:.1f} pairs/s), loss {result.first_loss:.4f} -> "
            f"{result.last_loss:.4f}; saved {result.out}"
        )

    params = _parameters(config)
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    command.__name__ = command.__qualname__ = name
    command.__doc__ = doc
    train_app.command(name)(command)


def _trainer(name: str) -> Callable[[Any], Any]:
    """The trainer ``embedstack.train.<name>``, looked up when the command runs."""

    def run(config: Any) -> Any:
        import embedstack.train

        return getattr(embedstack.train, name)(config)

    return run


_command(
    "reranker",
    RerankerConfig,
    _trainer("train_reranker"),
    "Train a cross-encoder reranker on DATASET_DIR's qrels/<split>.tsv and save it to --out "
    "(a Hugging Face folder that `CrossEncoder` and the server load).",
)
_command(
    "embedder",
    EmbedderConfig,
    _trainer("train_embedder"),
    "Fine-tune a bi-encoder on DATASET_DIR (a BEIR folder's qrels/<split>.tsv, a pairs JSONL "
    "or scored pairs) and save it to --out (a sentence-transformers folder that `Encoder` "
    "loads).",
)
_command(
    "colbert",
    ColbertConfig,
    _trainer("train_colbert"),
    "Train a ColBERT late-interaction model on DATASET_DIR's qrels/<split>.tsv and save it "
    "to --out (a folder that `LateInteractionEncoder` and `ColbertReranker` load).",
)
