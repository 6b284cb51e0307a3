"""A tiny random BERT on disk, so tests exercise the real HF loading path in milliseconds.

The real default model (all-MiniLM-L6-v2, 22M parameters) takes seconds to load and encode on a
2-core CI box; unit tests only need *a* BERT with the same architecture and a real WordPiece
tokenizer. The folder written here is an ordinary HF folder (config.json, model.safetensors,
vocab.txt, tokenizer_config.json) that `AutoModel` / `AutoTokenizer` load with
`local_files_only=True`. Weights come from a fixed seed, so every call writes the same model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import BertConfig, BertModel

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# Lower-case whole words plus a few WordPiece continuations and punctuation: enough that titles like
# "The Last Voyage (1994) | Drama, Romance" tokenize into known pieces rather than all [UNK].
_WORD_LIST = """
the a an of and in on to for with from by at is are was love war night day last first little big
man woman girl boy story life world time king queen city house road home dark light star stars
voyage return dream dreams heart secret game island river ocean space ghost family friends lost
new old great black white red blue green golden silent wild young american christmas summer winter
drama comedy romance action thriller horror adventure animation children fantasy crime mystery
sci fi documentary musical western war film noir imax genres none listed tags movie movies
good bad funny sad classic based book novel true quirky atmospheric dark twist ending visually
1 2 3 4 5 6 7 8 9 0 19 20 1994 1995 1999 2001 2010
##s ##ed ##ing ##er ##ly ##y ##es ##0 ##1 ##2 ##3 ##4 ##5 ##6 ##7 ##8 ##9
| , . ( ) - : ' ! ?
"""
WORDS = _WORD_LIST.split()

HIDDEN_SIZE = 32
NUM_LAYERS = 2
NUM_HEADS = 2


def tiny_vocab() -> list[str]:
    """The tokenizer vocabulary: special tokens first (so [PAD] has id 0, as in BERT), then words."""
    seen: dict[str, None] = dict.fromkeys(SPECIAL_TOKENS)
    for word in WORDS:
        seen.setdefault(word, None)
    return list(seen)


def make_tiny_bert(
    path: str | Path,
    *,
    seed: int = 0,
    max_position_embeddings: int = 128,
    hidden_size: int = HIDDEN_SIZE,
    num_layers: int = NUM_LAYERS,
    num_heads: int = NUM_HEADS,
    vocab_size: int | None = None,
) -> Path:
    """Write a tiny random `BertModel` (hidden 32, 2 layers, 2 heads) and its tokenizer to `path`.

    Returns the folder. Loadable offline by `AutoModel.from_pretrained(path, local_files_only=True)`
    and `AutoTokenizer.from_pretrained(path, local_files_only=True)`, and therefore by
    `TextEncoder.from_pretrained(path)`. The shape arguments (and `vocab_size`, reached with made-up
    words `w0`, `w1`, ...) let `benchmarks/gpu_check.py` write a random stand-in of a real model's
    size when the real one is not installed: speed depends on the shape, not the weights.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    vocab += [f"w{i}" for i in range(max(0, (vocab_size or 0) - len(vocab)))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer_config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": True,
        "model_max_length": max_position_embeddings,
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")

    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=4 * hidden_size,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=0,
    )
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = BertModel(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.save_pretrained(folder)
    return folder
