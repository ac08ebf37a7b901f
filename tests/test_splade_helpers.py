"""Tiny random BERT folders (masked-LM for SPLADE, plain for ColBERT) built by the tests.

Imported by test_splade*.py, test_colbert*.py and test_index_sparse.py; the tests here only
check the builders themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SPECIALS = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a an of and to in is are was for on with what how why cat cats dog dogs purr purrs "
    "bark barks stock stocks fell rose market paris france capital city river bank money "
    "protein cell cells cancer gene genes vaccine virus study results patients effect drug "
    "water fish sea sky blue red green sun moon star"
).split()
PUNCT = list(".,;:!?'\"()-")
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]


def vocab() -> dict[str, int]:
    tokens = SPECIALS + WORDS + PUNCT + LETTERS + ["##" + c for c in LETTERS] + ["##s"]
    return {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}


def save_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    v = vocab()
    tok = Tokenizer(models.WordPiece(v, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", v["[CLS]"]), ("[SEP]", v["[SEP]"])],
    )
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "do_lower_case": True,
        "mask_token": "[MASK]",
        "pad_token": "[PAD]",
        "tokenizer_class": "BertTokenizer",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def _config(**overrides: int):  # type: ignore[no-untyped-def]
    from transformers import BertConfig

    args = dict(
        vocab_size=len(vocab()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    args.update(overrides)
    return BertConfig(**args)


def build_tiny_mlm(folder: Path, seed: int = 0) -> Path:
    """A random ``BertForMaskedLM`` with a 150-term vocabulary, saved with its tokenizer.

    Word embeddings (tied to the MLM decoder) are drawn wide enough for the logits to depend
    on the text, and the MLM bias around -1.5 so that, as in a trained SPLADE model, most
    logits are negative and the term weights are sparse.
    """
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    model = transformers.BertForMaskedLM(_config()).eval()
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight.normal_(0, 0.2)
        model.cls.predictions.bias.normal_(-1.5, 0.5)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    save_tokenizer(folder)
    return folder


def build_tiny_bert(folder: Path, seed: int = 0, linear_dim: int | None = None) -> Path:
    """A random ``BertModel``; with ``linear_dim`` a ColBERT ``linear.weight`` head
    ``(linear_dim, hidden)`` is stored in ``model.safetensors`` (as ColBERTv2 does)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    model = transformers.BertModel(_config()).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    save_tokenizer(folder)
    if linear_dim is not None:
        from safetensors.numpy import load_file, save_file

        tensors = load_file(str(folder / "model.safetensors"))
        gen = torch.Generator().manual_seed(seed + 1)
        weight = torch.randn(linear_dim, model.config.hidden_size, generator=gen) * 0.2
        tensors["linear.weight"] = weight.numpy()
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def test_tokenizer_knows_the_markers(tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    save_tokenizer(tmp_path)
    tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    enc = tok.encode("Cats purr, dogs bark!")
    assert enc.tokens == ["[CLS]", "cats", "purr", ",", "dogs", "bark", "!", "[SEP]"]
    assert tok.token_to_id("[unused0]") == 1 and tok.token_to_id("[MASK]") == 6
    assert "[UNK]" not in tok.encode("zebra quagga").tokens
