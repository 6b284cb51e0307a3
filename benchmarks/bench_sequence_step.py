"""Cost of one sequence-tower training step, with and without the text-only softmax.

Why: the text-only softmax (`SequenceTrainConfig.text_loss`) trains only the text projection, so it
need not score every target of a step; this measures what scoring all of them, or
`text_loss_targets` of them, adds to a step at ml-latest-small's scale (random text vectors: the
cost does not depend on their values). Same process, same model, alternating modes.

    python benchmarks/bench_sequence_step.py --items 9743 --threads 1 --steps 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from encoders.sequence import SequenceConfig, SequenceTower, build_model
from encoders.sequence_training import SequenceTrainConfig, _text_only_loss, next_item_loss


def step(
    model: SequenceTower,
    optimizer: torch.optim.Optimizer,
    config: SequenceTrainConfig,
    mode: str,
    batch: int,
    length: int,
) -> None:
    """One optimiser step on random windows: `none`, `all` targets or a `subset` in the text-only softmax."""
    n = model.text.shape[0]
    inputs = torch.randint(1, n, (batch, length))
    targets = torch.randint(1, n, (batch, length)).reshape(-1)
    matrix = model.item_matrix()
    states = model.states(inputs, torch.zeros_like(inputs), matrix).reshape(-1, model.config.dim)
    loss = next_item_loss(states, targets, matrix, config, None)
    if mode != "none":
        subset = config if mode == "subset" else SequenceTrainConfig(text_loss_targets=len(targets))
        loss = loss + _text_only_loss(model, states, targets, subset, None, None)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=9743, help="catalog rows (ml-latest-small: 9,743)")
    parser.add_argument("--text-dim", type=int, default=384)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5, help="steps per mode and round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    text = np.random.default_rng(0).normal(size=(args.items, args.text_dim)).astype(np.float32) / 20
    model = build_model(text, np.ones(args.items, bool), SequenceConfig())
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    config = SequenceTrainConfig()
    seconds: dict[str, list[float]] = {"none": [], "all": [], "subset": []}
    for _ in range(2):  # two rounds, modes alternating, so drift in the machine's load hits all of them
        for mode in seconds:
            started = time.perf_counter()
            for _ in range(args.steps):
                step(model, optimizer, config, mode, batch=16, length=128)
            seconds[mode].append((time.perf_counter() - started) / args.steps)
    base = float(np.mean(seconds["none"]))
    print(f"| text-only softmax | s/step (2,048 targets, {args.items:,} items, {args.threads} thread) | ratio |")
    print("|---|---:|---:|")
    labels = {"none": "off", "all": "every target", "subset": f"{config.text_loss_targets} targets (default)"}
    for mode, values in seconds.items():
        mean = float(np.mean(values))
        print(f"| {labels[mode]} | {mean:.3f} | {mean / base:.2f} |")


if __name__ == "__main__":
    main()
