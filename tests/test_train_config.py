"""The trainers' settings: one frozen, validated config and the CLI built from it (no torch)."""

from __future__ import annotations

import dataclasses
import doctest
from pathlib import Path
from typing import Any

import pytest
import typer

from embedstack.errors import InvalidInput
from embedstack.train.config import (
    ColbertConfig,
    RerankerConfig,
    TrainConfig,
    cli_fields,
    flag,
)

CONFIGS = [RerankerConfig, ColbertConfig]
REQUIRED: dict[str, Any] = {"dataset_dir": "data", "out": "model"}

# the keyword arguments each trainer recorded in training_args.json before the config
RERANKER_ARGS = set(
    "dataset_dir out split base epochs max_pairs negatives_per_query random_negatives "
    "mining_depth max_ratio loss batch_size lr warmup weight_decay max_length layers split_layer "
    "query_length seed threads bf16 log_every negatives_file miner teacher".split()
)
COLBERT_ARGS = set(
    "dataset_dir out split base dim query_maxlen doc_maxlen epochs max_pairs "
    "negatives_per_query batch_size lr warmup weight_decay temperature seed threads bf16 "
    "log_every negatives_file miner".split()
)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize(
    ("option", "value", "flag_name", "what"),
    [
        ("epochs", 0, "--epochs", "a positive int"),
        ("epochs", 1.5, "--epochs", "a positive int"),
        ("batch_size", True, "--batch-size", "a positive int"),
        ("max_pairs", 0, "--max-pairs", "a positive int"),
        ("negatives_per_query", 0, "--negatives", "a positive int"),
        ("random_negatives", -1, "--random-negatives", "an int >= 0"),
        ("mining_depth", 0, "--mining-depth", "a positive int"),
        ("max_ratio", 0.0, "--max-ratio", "a positive number"),
        ("layers", 0, "--layers", "a positive int"),
        ("lr", 0, "--lr", "a positive number"),
        ("lr", "fast", "--lr", "a positive number"),
        ("warmup", 1.0, "--warmup", "a number in [0, 1)"),
        ("warmup", -0.1, "--warmup", "a number in [0, 1)"),
        ("weight_decay", -0.01, "--weight-decay", "a number >= 0"),
        ("seed", -1, "--seed", "an int >= 0"),
        ("threads", 0, "--threads", "a positive int"),
        ("bf16", "yes", "--bf16", "true or false"),
        ("log_every", 0, "--log-every", "a positive int"),
        ("split", " ", "--split", "a non-empty string"),
    ],
)
def test_shared_options_are_checked_once_for_every_trainer(
    config: type[TrainConfig], option: str, value: Any, flag_name: str, what: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        config(**REQUIRED, **{option: value})
    assert str(caught.value) == f"{option} ({flag_name}) must be {what}, got {value!r}"


@pytest.mark.parametrize(
    ("config", "options", "needle"),
    [
        (RerankerConfig, {"loss": "hinge"}, "loss (--loss) must be one of bce, listwise"),
        (RerankerConfig, {"max_length": 15}, "max_length (--max-length) must be an int >= 16"),
        (RerankerConfig, {"loss": "margin-mse"}, "--teacher"),
        (RerankerConfig, {"teacher": "some/model"}, "--teacher"),
        (RerankerConfig, {"split_layer": 0}, "split_layer (--split-layer)"),
        (
            RerankerConfig,
            {"split_layer": 1, "query_length": 63, "max_length": 64},
            "query_length",
        ),  # fmt: skip
        (ColbertConfig, {"dim": 0}, "dim (--dim) must be a positive int"),
        (ColbertConfig, {"query_maxlen": 3}, "query_maxlen (--query-maxlen) must be an int >= 4"),
        (ColbertConfig, {"temperature": 0}, "temperature (--temperature) must be a positive"),
        (RerankerConfig, {"dataset_dir": 3}, "dataset_dir must be a path"),
        (ColbertConfig, {"show_progress": "auto"}, "show_progress must be true or false"),
        (ColbertConfig, {"miner": 3}, "miner (--miner) must be a model name or an encoder"),
        (RerankerConfig, {"loss": "margin-mse", "teacher": 3}, "teacher (--teacher) must be"),
    ],
)
def test_trainer_options_are_checked(
    config: type[TrainConfig], options: dict[str, Any], needle: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        config(**{**REQUIRED, **options})
    assert needle in str(caught.value)


def test_config_is_frozen_and_normalises_paths() -> None:
    config = RerankerConfig(dataset_dir="data", out=Path("model"), base=Path("base"),
                            negatives_file="negs.jsonl")  # fmt: skip
    assert config.dataset_dir == Path("data") and config.negatives_file == Path("negs.jsonl")
    assert config.base == "base"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3  # type: ignore[misc]
    assert ColbertConfig(**REQUIRED).negatives_per_query == 1  # the trainer's own default
    assert RerankerConfig(**REQUIRED).negatives_per_query == 7


def test_build_takes_a_config_or_a_folder_and_keywords() -> None:
    config = RerankerConfig(**REQUIRED, epochs=2)
    assert RerankerConfig.build(config) is config
    again = RerankerConfig.build(config, epochs=3)
    assert again.epochs == 3 and again.out == config.out and config.epochs == 2
    assert RerankerConfig.build("data", out="model", epochs=2) == config
    assert RerankerConfig.build(dataset_dir="data", out="model", epochs=2) == config
    with pytest.raises(InvalidInput, match="given twice"):
        RerankerConfig.build("data", dataset_dir="other", out="model")
    with pytest.raises(InvalidInput, match="RerankerConfig needs dataset_dir"):
        RerankerConfig.build(out="model")
    with pytest.raises(InvalidInput, match="ColbertConfig needs out"):
        ColbertConfig.build("data")
    with pytest.raises(InvalidInput, match="unknown option 'temperature' for RerankerConfig"):
        RerankerConfig.build("data", out="model", temperature=0.5)
    with pytest.raises(InvalidInput, match="expected a RerankerConfig, got a ColbertConfig"):
        RerankerConfig.build(ColbertConfig(**REQUIRED))
    with pytest.raises(InvalidInput, match="epochs"):
        RerankerConfig.build(config, epochs=0)  # replacing checks again


def test_trainers_refuse_unknown_options_before_any_work(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from embedstack.train import train_colbert, train_reranker

    with pytest.raises(InvalidInput, match="unknown option 'dim'"):
        train_reranker(tmp_path, out=tmp_path / "a", dim=8)
    with pytest.raises(InvalidInput, match="unknown option 'loss'"):
        train_colbert(tmp_path, out=tmp_path / "a", loss="bce")
    assert not (tmp_path / "a").exists()


def test_record_keeps_the_training_args_shape() -> None:
    reranker = RerankerConfig(**REQUIRED).record()
    colbert = ColbertConfig(**REQUIRED).record()
    assert RERANKER_ARGS <= set(reranker) and COLBERT_ARGS <= set(colbert)
    assert not {"overwrite", "show_progress"} & (set(reranker) | set(colbert))
    assert reranker["dataset_dir"] == "data" and reranker["negatives_file"] is None

    class Miner:
        model_id = "hash@0123"

        def encode_documents(self, texts: list[str]) -> None:
            raise AssertionError("not called")

    assert RerankerConfig(**REQUIRED, miner=Miner()).record()["miner"] == "hash@0123"


def _command(name: str) -> Any:
    from embedstack.cli import app

    group = typer.main.get_command(app)
    train = group.commands["train"]  # type: ignore[attr-defined]
    return train.commands[name]


@pytest.mark.parametrize(("name", "config"), [("reranker", RerankerConfig),
                                              ("colbert", ColbertConfig)])  # fmt: skip
def test_cli_options_are_the_config_fields(name: str, config: type[TrainConfig]) -> None:
    """Each command offers exactly its config's CLI fields, with the config's defaults,
    flags and help: the shared options come from TrainConfig for both commands."""
    command = _command(name)
    params = {p.name: p for p in command.params if p.name != "help"}
    specs = {f.name: f for f in cli_fields(config)}
    assert list(params) == list(specs)
    assert {f.name for f in cli_fields(TrainConfig)} <= set(params)
    for field_name, spec in specs.items():
        param = params[field_name]
        assert param.help == spec.metadata["help"]
        if spec.metadata.get("argument"):
            continue
        assert flag(spec) in param.opts
        if spec.default is not dataclasses.MISSING:
            assert param.default == spec.default, field_name


def test_cli_reports_a_bad_shared_option_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from embedstack.cli import run

    for name in ("reranker", "colbert"):
        code = run(["train", name, str(tmp_path), "--out", str(tmp_path / "m"), "--warmup", "1"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err == "error: warmup (--warmup) must be a number in [0, 1), got 1.0"
    assert not (tmp_path / "m").exists()


def test_module_example_runs() -> None:
    from embedstack.train import config

    result = doctest.testmod(config)
    assert result.failed == 0 and result.attempted >= 3
