"""The chunked full-catalog softmax equals autograd's cross-entropy over the whole logit matrix."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from encoders.catalog_softmax import catalog_cross_entropy


def _inputs(rows: int = 37, items: int = 150, dim: int = 8, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    states = torch.randn(rows, dim, generator=generator, requires_grad=True)
    catalog = torch.randn(items, dim, generator=generator, requires_grad=True)
    targets = torch.randint(0, items, (rows,), generator=generator)
    return states, catalog, targets


def _grads(loss: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, tensors))


@pytest.mark.parametrize("chunk", [1, 10, 64])
def test_loss_and_gradients_equal_autograd_cross_entropy(chunk):
    states, catalog, targets = _inputs()
    expected = F.cross_entropy(states @ catalog.T, targets)
    got = catalog_cross_entropy(states, catalog, targets, chunk=chunk)
    torch.testing.assert_close(got, expected)
    for mine, theirs in zip(_grads(got * 3.0, states, catalog), _grads(expected * 3.0, states, catalog), strict=True):
        torch.testing.assert_close(mine, theirs)  # scaled upstream gradient included


def test_column_mask_leaves_items_out_of_the_softmax():
    states, catalog, targets = _inputs()
    mask = torch.ones(len(catalog), dtype=torch.bool)
    mask[::3] = False
    mask[targets] = True
    logits = (states @ catalog.T).masked_fill(~mask, float("-inf"))
    expected = F.cross_entropy(logits, targets)
    got = catalog_cross_entropy(states, catalog, targets, mask, chunk=8)
    torch.testing.assert_close(got, expected)
    grad_catalog = _grads(got, catalog)[0]
    assert torch.all(grad_catalog[~mask] == 0)  # a masked item is neither pushed up nor down
    torch.testing.assert_close(grad_catalog, _grads(expected, catalog)[0])


def test_detached_states_train_only_the_catalog():
    states, catalog, targets = _inputs()
    loss = catalog_cross_entropy(states.detach(), catalog, targets)
    loss.backward()
    assert states.grad is None and catalog.grad is not None
    with torch.no_grad():
        torch.testing.assert_close(catalog_cross_entropy(states, catalog, targets), loss.detach())


def test_no_targets_is_an_error():
    states, catalog, _ = _inputs()
    with pytest.raises(ValueError, match="at least one target"):
        catalog_cross_entropy(states[:0], catalog, torch.zeros(0, dtype=torch.long))
