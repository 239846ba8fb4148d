"""Helpers for the tests that hold an objective against its authors' reference: inputs and the comparison."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def unit_batch(names, b: int, d: int, seed: int) -> dict[str, torch.Tensor]:
    """``{name: [b, d]}`` random unit vectors in float64 that require gradients."""
    g = torch.Generator().manual_seed(seed)
    return {n: F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=-1).requires_grad_(True)
            for n in names}


def assert_equal_to_reference(ours: torch.Tensor, reference: torch.Tensor, inputs, atol: float = 1e-6) -> None:
    """The same value and the same gradients with respect to every one of ``inputs``, to ``atol``."""
    torch.testing.assert_close(ours, reference, rtol=0, atol=atol)
    for g, r in zip(torch.autograd.grad(ours, inputs, retain_graph=True),
                    torch.autograd.grad(reference, inputs, retain_graph=True)):
        torch.testing.assert_close(g, r, rtol=0, atol=atol)


def passes_gradcheck(loss, feats: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> bool:
    """``torch.autograd.gradcheck`` of ``loss(feats, m)`` in the features, without masks and with ``masks``."""
    names = list(feats)
    return all(torch.autograd.gradcheck(lambda *xs: loss(dict(zip(names, xs)), m), tuple(feats.values()))
               for m in (None, masks))
