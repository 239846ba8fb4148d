"""Bridge two separately trained spaces without paired data (Ex-MCR).

Space A (the base) and space B (the leaf) share one modality, say text. Only *unpaired*
pools are used: a pool of the shared modality embedded by both spaces, and pools of each
space's other modalities embedded by that space alone. Pseudo-pairs are built by
similarity-weighted aggregation over these memories (Wang et al., "Extending Multi-modal
Contrastive Representations", 2023):

    agg(q, K, M) = normalize(softmax(q K^T / tau) M)

Around each pool item ("modality-centric" data) we assemble one pseudo tuple that has a
vector for every modality of both spaces, then train a :class:`Projector` mapping B's
space into A's with InfoNCE over every (B-side, A-side) pair of the tuple ("dense"
alignment) plus a small intra-space term that pulls B's modalities together after
projection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gramx.losses.contrastive import symmetric_cross_entropy
from gramx.model.heads import Projector
from gramx.runtime.progress import progress as progress_report

__all__ = ["aggregate", "BridgePools", "PseudoTuples", "pseudo_tuples", "bridge_loss", "fit_projector"]


def aggregate(q: torch.Tensor, keys: torch.Tensor, memory: torch.Tensor, tau: float = 0.01,
              chunk: int = 4096) -> torch.Tensor:
    """``normalize(softmax(q keys^T / tau) memory)``, in chunks of queries.

    ``q[N, dk]``, ``keys[P, dk]``, ``memory[P, dm]`` (row p of keys and memory describe the
    same pool item, e.g. one caption embedded by two spaces). Returns ``[N, dm]``.
    """
    parts = [
        F.normalize((q[i:i + chunk] @ keys.T / tau).softmax(dim=1) @ memory, dim=-1)
        for i in range(0, q.shape[0], chunk)
    ]
    return torch.cat(parts) if parts else memory.new_zeros(0, memory.shape[1])


@dataclass
class BridgePools:
    """Unpaired embeddings for bridging.

    ``shared_a[P, dA]`` and ``shared_b[P, dB]``: one pool of the shared modality embedded
    by both spaces (row p is the same item). ``a_pools``/``b_pools``: pools of each space's
    other modalities, embedded by their own space only, ``{modality: [N, d]}``.
    """

    shared_a: torch.Tensor
    shared_b: torch.Tensor
    a_pools: Mapping[str, torch.Tensor]
    b_pools: Mapping[str, torch.Tensor]


@dataclass
class PseudoTuples:
    """Pseudo tuples: one row per centric item, a vector per modality on each side.

    ``b[modality] [N, dB]`` holds B-space vectors (the shared modality plus B's others) and
    ``a[modality] [N, dA]`` A-space vectors (the shared modality plus A's others).
    """

    b: dict[str, torch.Tensor]
    a: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return next(iter(self.a.values())).shape[0]

    def subset(self, rows: torch.Tensor) -> "PseudoTuples":
        return PseudoTuples({k: v[rows] for k, v in self.b.items()}, {k: v[rows] for k, v in self.a.items()})


def _complete(side: dict[str, torch.Tensor], shared: str, pools: Mapping[str, torch.Tensor], tau: float):
    """Fill each modality missing on one side by aggregating its pool around the shared vector."""
    for name, pool in pools.items():
        if name not in side:
            side[name] = aggregate(side[shared], pool, pool, tau)
    return side


@torch.no_grad()
def pseudo_tuples(pools: BridgePools, shared: str, tau: float = 0.01, noise: float = 0.0,
                  generator: torch.Generator | None = None) -> PseudoTuples:
    """Build modality-centric pseudo tuples from unpaired pools.

    Centred on the shared modality (real pairs across the spaces), on each of B's other
    modalities and on each of A's other modalities. ``noise`` adds Gaussian noise of that
    standard deviation to the centric inputs (then re-normalises), as Ex-MCR does.
    """
    def jitter(x):
        if noise <= 0:
            return x
        return F.normalize(x + noise * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device), dim=-1)

    groups = []
    # shared-centric: the same item in both spaces
    groups.append(({shared: jitter(pools.shared_b)}, {shared: jitter(pools.shared_a)}))
    for name, pool in pools.b_pools.items():  # B-centric: retrieve shared items through B
        x = jitter(pool)
        groups.append((
            {name: x, shared: aggregate(x, pools.shared_b, pools.shared_b, tau)},
            {shared: aggregate(x, pools.shared_b, pools.shared_a, tau)},
        ))
    for name, pool in pools.a_pools.items():  # A-centric: retrieve shared items through A
        x = jitter(pool)
        groups.append((
            {shared: aggregate(x, pools.shared_a, pools.shared_b, tau)},
            {name: x, shared: aggregate(x, pools.shared_a, pools.shared_a, tau)},
        ))
    b_sides = [_complete(b, shared, pools.b_pools, tau) for b, _ in groups]
    a_sides = [_complete(a, shared, pools.a_pools, tau) for _, a in groups]
    return PseudoTuples(
        b={k: torch.cat([s[k] for s in b_sides]) for k in b_sides[0]},
        a={k: torch.cat([s[k] for s in a_sides]) for k in a_sides[0]},
    )


def bridge_loss(projector: Projector, batch: PseudoTuples, temperature: float = 0.05,
                intra_weight: float = 0.1) -> torch.Tensor:
    """Dense InfoNCE between projected B-side vectors and A-side vectors, plus intra-space alignment."""
    projected = {name: projector(x) for name, x in batch.b.items()}
    dense = [
        symmetric_cross_entropy(pb @ va.T / temperature).mean()
        for pb in projected.values() for va in batch.a.values()
    ]
    names = sorted(projected)
    intra = [
        symmetric_cross_entropy(projected[m] @ projected[n].T / temperature).mean()
        for i, m in enumerate(names) for n in names[i + 1:]
    ]
    loss = torch.stack(dense).mean()
    if intra and intra_weight:
        loss = loss + intra_weight * torch.stack(intra).mean()
    return loss


def fit_projector(
    tuples: PseudoTuples,
    projector: Projector,
    steps: int = 1000,
    batch_size: int = 256,
    lr: float = 1e-3,
    temperature: float = 0.05,
    intra_weight: float = 0.1,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Train ``projector`` on pseudo tuples with AdamW; returns the loss per step."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(projector.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    projector.train()
    losses = []
    bar = progress_report(range(steps), desc="bridge", unit="step", disable=not progress)
    for _ in bar:
        rows = torch.randperm(len(tuples), generator=generator)[:batch_size]
        loss = bridge_loss(projector, tuples.subset(rows), temperature, intra_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    projector.eval()
    return losses
