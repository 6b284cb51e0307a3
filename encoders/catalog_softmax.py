"""Full-catalog softmax cross-entropy without the (targets × catalog) logit matrix in memory.

The sequence tower's loss scores every training target against every item: on ml-latest-small a
step holds ~2,000 targets × 9,724 items = 20M logits. Written as `cross_entropy(states @ catalog.T)`,
autograd keeps those logits, a log-softmax of the same size and a gradient of the same size, and
each is a pass through main memory; on CPU that, not the matrix products, was most of a step
(`benchmarks/bench_sequence_step.py --compare softmax`, BENCHMARKS.md).

Here the rows are taken a chunk at a time: the chunk's logits stay in cache, their log-sum-exp
gives the loss, and the softmax minus the one-hot target is turned into both gradients at once
(d states = P @ catalog, d catalog += Pᵀ @ states), the way fused "linear cross-entropy" kernels do
it on GPUs. The gradients are computed in the forward pass and scaled in the backward pass, so the
result equals `F.cross_entropy(states @ catalog.T, targets)` (tested to float precision) at about
half the time, with memory of one chunk.
"""

from __future__ import annotations

import torch

DEFAULT_CHUNK = 64  # rows per chunk: fastest of 32-512 on the 2-core box (module doc's benchmark)


class _ChunkedCatalogXent(torch.autograd.Function):
    @staticmethod
    def forward(ctx, states, catalog, targets, column_mask, chunk):
        want_states, want_catalog = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_states = torch.empty_like(states) if want_states else None
        grad_catalog = torch.zeros_like(catalog) if want_catalog else None
        total = states.new_zeros(())
        for start in range(0, len(targets), chunk):
            rows = states[start : start + chunk]
            wanted = targets[start : start + chunk]
            logits = rows @ catalog.T
            if column_mask is not None:
                logits.masked_fill_(~column_mask, float("-inf"))
            lse = torch.logsumexp(logits, dim=1)
            total += (lse - logits.gather(1, wanted[:, None]).squeeze(1)).sum()
            if grad_states is None and grad_catalog is None:
                continue
            probs = logits.sub_(lse[:, None]).exp_()  # in place: the chunk's logits are not needed again
            probs[torch.arange(len(wanted)), wanted] -= 1.0
            if grad_states is not None:
                grad_states[start : start + chunk] = probs @ catalog
            if grad_catalog is not None:
                grad_catalog.addmm_(probs.T, rows)
        ctx.save_for_backward(
            grad_states if grad_states is not None else states.new_empty(0),
            grad_catalog if grad_catalog is not None else catalog.new_empty(0),
        )
        ctx.count = len(targets)
        return total / ctx.count

    @staticmethod
    def backward(ctx, grad_output):
        grad_states, grad_catalog = ctx.saved_tensors
        scale = grad_output / ctx.count
        return (
            grad_states * scale if ctx.needs_input_grad[0] else None,
            grad_catalog * scale if ctx.needs_input_grad[1] else None,
            None,
            None,
            None,
        )


def catalog_cross_entropy(
    states: torch.Tensor,
    catalog: torch.Tensor,
    targets: torch.Tensor,
    column_mask: torch.Tensor | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """Mean of `F.cross_entropy(states @ catalog.T, targets)`, computed a chunk of rows at a time.

    `column_mask` (bool, one per catalog row) leaves the unmarked items out of every softmax; each
    target must be marked. Differentiable once in `states` and `catalog` (no double backward).
    """
    if len(targets) == 0:
        raise ValueError("catalog_cross_entropy needs at least one target")
    return _ChunkedCatalogXent.apply(states, catalog, targets, column_mask, chunk)
