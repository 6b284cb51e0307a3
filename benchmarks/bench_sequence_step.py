"""Cost of one sequence-tower training step: the text-only softmax, and the catalog softmax's form.

Why, `--compare text-loss`: the text-only softmax (`SequenceTrainConfig.text_loss`) trains only the
text projection, so it need not score every target of a step; this measures what scoring all of
them, or `text_loss_targets` of them, adds to a step.

Why, `--compare softmax`: a step scores ~2,000 targets against ~9,700 items, and on CPU the softmax
over that logit matrix, not the transformer, was most of the step. This times whole steps with the
loss written as `F.cross_entropy(states @ catalog.T, targets)` (the baseline) and as
`catalog_cross_entropy` (what training uses: `encoders/catalog_softmax.py`).

Whole steps (forward, loss, backward, Adam) of the real tower on random windows at ml-latest-small's
scale (random text vectors and items: the cost does not depend on their values); same process,
modes alternating so drift in the machine's load hits all of them; the first round is a warm-up.

    python benchmarks/bench_sequence_step.py --compare text-loss --items 9743 --threads 1 --steps 5
    python benchmarks/bench_sequence_step.py --compare softmax --threads 1 2 --steps 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.nn import functional as F

from encoders.sequence import SequenceConfig, SequenceTower, build_model
from encoders.sequence_training import SequenceTrainConfig, _text_only_loss, next_item_loss

TEXT_LOSS_MODES = {"none": "off", "all": "every target", "subset": "`text_loss_targets` targets (default)"}
SOFTMAX_MODES = {"autograd": "autograd cross_entropy (baseline)", "chunked": "chunked catalog softmax (training)"}


def step(
    model: SequenceTower,
    optimizer: torch.optim.Optimizer,
    config: SequenceTrainConfig,
    mode: str,
    batch: int = 16,
    length: int = 128,
) -> None:
    """One optimiser step on random windows in `mode`: a TEXT_LOSS_MODES or SOFTMAX_MODES key."""
    n = model.text.shape[0]
    inputs = torch.randint(1, n, (batch, length))
    targets = torch.randint(1, n, (batch, length)).reshape(-1)
    matrix = model.item_matrix()
    states = model.states(inputs, torch.zeros_like(inputs), matrix).reshape(-1, model.config.dim)
    if mode == "autograd":
        loss = F.cross_entropy(states @ matrix[1:].T, targets - 1)
    else:
        loss = next_item_loss(states, targets, matrix, config, None)
    if mode in ("all", "subset"):
        subset = config if mode == "subset" else SequenceTrainConfig(text_loss_targets=len(targets))
        loss = loss + _text_only_loss(model, states, targets, subset, None, None)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", choices=["text-loss", "softmax"], default="text-loss")
    parser.add_argument("--items", type=int, default=9743, help="catalog rows (ml-latest-small: 9,743)")
    parser.add_argument("--text-dim", type=int, default=384)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--steps", type=int, default=5, help="steps per mode and round")
    args = parser.parse_args()
    torch.manual_seed(0)
    text = np.random.default_rng(0).normal(size=(args.items, args.text_dim)).astype(np.float32) / 20
    model = build_model(text, np.ones(args.items, bool), SequenceConfig())
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    config = SequenceTrainConfig()
    labels = TEXT_LOSS_MODES if args.compare == "text-loss" else SOFTMAX_MODES
    print(f"| {args.compare} | threads | s/step (2,048 targets, {args.items:,} items) | ratio |")
    print("|---|---:|---:|---:|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        seconds: dict[str, list[float]] = {mode: [] for mode in labels}
        for _ in range(3):
            for mode in seconds:
                started = time.perf_counter()
                for _ in range(args.steps):
                    step(model, optimizer, config, mode)
                seconds[mode].append((time.perf_counter() - started) / args.steps)
        base = float(np.mean(seconds[next(iter(labels))][1:]))
        for mode, values in seconds.items():
            mean = float(np.mean(values[1:]))
            print(f"| {labels[mode]} | {threads} | {mean:.3f} | {mean / base:.2f} |")


if __name__ == "__main__":
    main()
