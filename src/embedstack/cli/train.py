"""``embedstack train ...``: thin wrappers over :mod:`embedstack.train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from embedstack.cli.app import app, err, out
from embedstack.encoders.registry import DEFAULT_MODEL
from embedstack.errors import InvalidInput

train_app = typer.Typer(help="Train models on your own judgements.", no_args_is_help=True)
app.add_typer(train_app, name="train")


@train_app.command("reranker")
def reranker(
    dataset_dir: Annotated[Path, typer.Argument(help="BEIR folder (corpus/queries/qrels).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to save the model to.")],
    split: Annotated[str, typer.Option(help="qrels split to train on.")] = "train",
    base: Annotated[
        str, typer.Option(help="BERT-family model initialising the cross-encoder.")
    ] = DEFAULT_MODEL,
    miner: Annotated[
        str, typer.Option(help="Dense model mining hard negatives ('none': BM25 only).")
    ] = DEFAULT_MODEL,
    epochs: Annotated[int, typer.Option(help="Passes over the training pairs.")] = 1,
    max_pairs: Annotated[
        int | None, typer.Option(help="Cap on (query, document) pairs per epoch.")
    ] = None,
    negatives: Annotated[
        int, typer.Option("--negatives", help="Hard negatives per judged pair.")
    ] = 7,
    random_negatives: Annotated[
        int, typer.Option(help="Extra negatives per pair drawn at random from the corpus.")
    ] = 0,
    loss: Annotated[
        str, typer.Option(help="bce, listwise, or margin-mse (distil --teacher).")
    ] = "bce",
    teacher: Annotated[
        str | None,
        typer.Option(help="Cross-encoder whose scores margin-mse distils (folder or HF id)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Pairs per optimizer step.")] = 16,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 5e-5,
    max_length: Annotated[int, typer.Option(help="Tokens per (query, document) pair.")] = 256,
    layers: Annotated[
        int | None, typer.Option(help="Keep the base's first N layers (faster reranker).")
    ] = None,
    split_layer: Annotated[
        int | None,
        typer.Option(
            help="Read query and document apart below layer N (PreTTR: an index "
            "stores documents' states there, reranks run the layers above)."
        ),
    ] = None,
    query_length: Annotated[
        int, typer.Option(help="With --split-layer: tokens of the query segment.")
    ] = 32,
    max_ratio: Annotated[
        float, typer.Option(help="Drop negatives the miner scores above this x positive.")
    ] = 0.95,
    mining_depth: Annotated[
        int, typer.Option(help="Candidates per query the miners retrieve.")
    ] = 30,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    threads: Annotated[int, typer.Option(help="torch threads.")] = 2,
    bf16: Annotated[bool, typer.Option(help="bfloat16 autocast (CPUs with bf16 units).")] = False,
    negatives_file: Annotated[
        Path | None,
        typer.Option(help="Reuse the hard_negatives.jsonl of an earlier training."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier training's --out.")] = False,
) -> None:
    """Train a cross-encoder reranker on DATASET_DIR's qrels/<split>.tsv and save it to --out
    (a Hugging Face folder that `CrossEncoder` and the server load)."""
    from embedstack.train import train_reranker
    from embedstack.train.reranker import LOSSES

    if loss not in LOSSES:
        raise InvalidInput(f"--loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    result = train_reranker(
        dataset_dir,
        out=out_dir,
        split=split,
        base=base,
        miner=None if miner.lower() == "none" else miner,
        teacher=teacher,
        epochs=epochs,
        max_pairs=max_pairs,
        negatives_per_query=negatives,
        random_negatives=random_negatives,
        loss=loss,  # type: ignore[arg-type]
        batch_size=batch_size,
        lr=lr,
        max_length=max_length,
        layers=layers,
        split_layer=split_layer,
        query_length=query_length,
        max_ratio=max_ratio,
        mining_depth=mining_depth,
        seed=seed,
        threads=threads,
        bf16=bf16,
        negatives_file=negatives_file,
        overwrite=overwrite,
        show_progress=None,
    )
    err.print(
        f"mined negatives in {result.mining_seconds:.0f} s ({result.groups} groups, "
        f"{result.dropped_negatives} likely false negatives dropped)"
    )
    out.print(
        f"trained {result.steps} steps on {result.pairs} pairs in {result.seconds:.0f} s "
        f"({result.pairs_per_second:.1f} pairs/s), loss {result.first_loss:.4f} -> "
        f"{result.last_loss:.4f}; saved {result.out}"
    )


@train_app.command("colbert")
def colbert(
    dataset_dir: Annotated[Path, typer.Argument(help="BEIR folder (corpus/queries/qrels).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to save the model to.")],
    split: Annotated[str, typer.Option(help="qrels split to train on.")] = "train",
    base: Annotated[
        str, typer.Option(help="BERT-family model whose body starts the training.")
    ] = DEFAULT_MODEL,
    miner: Annotated[
        str, typer.Option(help="Dense model mining hard negatives ('none': BM25 only).")
    ] = DEFAULT_MODEL,
    dim: Annotated[int, typer.Option(help="Token vector dimension (the linear head's).")] = 128,
    epochs: Annotated[int, typer.Option(help="Passes over the training groups.")] = 1,
    max_pairs: Annotated[
        int | None, typer.Option(help="Cap on (query, document) pairs per epoch.")
    ] = None,
    negatives: Annotated[
        int, typer.Option("--negatives", help="Hard negatives per judged pair.")
    ] = 1,
    batch_size: Annotated[
        int, typer.Option(help="Queries per optimizer step (in-batch negatives).")
    ] = 16,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 5e-5,
    temperature: Annotated[
        float, typer.Option(help="MaxSim scores are divided by it in the softmax.")
    ] = 1.0,
    query_maxlen: Annotated[
        int, typer.Option(help="Query tokens ([MASK]-padded to this length).")
    ] = 32,
    doc_maxlen: Annotated[int, typer.Option(help="Document tokens.")] = 180,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    threads: Annotated[int, typer.Option(help="torch threads.")] = 2,
    bf16: Annotated[bool, typer.Option(help="bfloat16 autocast (CPUs with bf16 units).")] = False,
    negatives_file: Annotated[
        Path | None,
        typer.Option(help="Reuse the hard_negatives.jsonl of an earlier training."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier training's --out.")] = False,
) -> None:
    """Train a ColBERT late-interaction model on DATASET_DIR's qrels/<split>.tsv and save it
    to --out (a folder that `LateInteractionEncoder` and `ColbertReranker` load)."""
    from embedstack.train import train_colbert

    result = train_colbert(
        dataset_dir,
        out=out_dir,
        split=split,
        base=base,
        miner=None if miner.lower() == "none" else miner,
        dim=dim,
        query_maxlen=query_maxlen,
        doc_maxlen=doc_maxlen,
        epochs=epochs,
        max_pairs=max_pairs,
        negatives_per_query=negatives,
        batch_size=batch_size,
        lr=lr,
        temperature=temperature,
        seed=seed,
        threads=threads,
        bf16=bf16,
        negatives_file=negatives_file,
        overwrite=overwrite,
        show_progress=None,
    )
    err.print(
        f"mined negatives in {result.mining_seconds:.0f} s ({result.groups} groups, "
        f"{result.dropped_negatives} likely false negatives dropped)"
    )
    out.print(
        f"trained {result.steps} steps on {result.pairs} pairs in {result.seconds:.0f} s "
        f"({result.pairs_per_second:.1f} pairs/s), loss {result.first_loss:.4f} -> "
        f"{result.last_loss:.4f}; saved {result.out}"
    )
