"""Anchor-vs-tuple distances over a batch, which the contrastive losses turn into logits.

A :class:`TupleDistance` says which samples of a batch take part for an anchor modality
(:meth:`~TupleDistance.rows`) and scores the anchors of some rows against the tuples of the
others' vectors of other rows (:meth:`~TupleDistance.__call__`, smaller = better match). A
loss asks for the whole ``[n, n]`` matrix, or, with the local loss, only the rows and
columns of one process's samples.

- :class:`VolumeDistance`: the Gram volume of (anchor, others) (GRAM); a sample takes part
  when its anchor and at least one other modality are present, missing ones are left out;
- :class:`RegularisedVolume`: the volume minus the anchor's cosine similarities, scaled;
- :class:`AreaDistance`: the triangle area (TRIANGLE), over samples with all three present.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from gramx.scores.similarity import area_matrix
from gramx.scores.volume import volume_matrix

__all__ = ["present", "presence", "TupleDistance", "VolumeDistance", "RegularisedVolume", "AreaDistance"]

Feats = Mapping[str, torch.Tensor]
Masks = Mapping[str, torch.Tensor] | None


def present(feats: Feats, masks: Masks, name: str) -> torch.Tensor:
    """The presence mask ``[B]`` of modality ``name`` (all true without masks)."""
    x = feats[name]
    if masks is None or name not in masks:
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    return masks[name].to(device=x.device, dtype=torch.bool)


def presence(feats: Feats, masks: Masks, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The presence masks ``{name: [B]}`` of ``names``; a ``KeyError`` names those the batch lacks."""
    missing = [n for n in names if n not in feats]
    if missing:
        raise KeyError(f"loss needs modalities {missing}, the batch has {sorted(feats)}")
    return {n: present(feats, masks, n) for n in names}


class TupleDistance:
    """Distances between anchors and tuples of the other modalities; subclasses define both methods."""

    def others(self, feats: Feats, anchor: str) -> list[str]:
        others = sorted(n for n in feats if n != anchor)
        if not others:
            raise ValueError("a joint loss needs at least two modalities")
        return others

    def rows(self, feats: Feats, masks: Masks, anchor: str) -> torch.Tensor:
        """The indices of the samples that take part for ``anchor``."""
        raise NotImplementedError

    def __call__(self, feats: Feats, masks: Masks, anchor: str, anchor_rows: torch.Tensor,
                 tuple_rows: torch.Tensor) -> torch.Tensor:
        """``[len(anchor_rows), len(tuple_rows)]`` distances of anchor i to the tuple of sample j."""
        raise NotImplementedError

    def matrix(self, feats: Feats, masks: Masks, anchor: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(distances [n, n], rows [n])`` over the samples that take part."""
        rows = self.rows(feats, masks, anchor)
        return self(feats, masks, anchor, rows, rows), rows


class VolumeDistance(TupleDistance):
    """The Gram volume of (anchor_i, others_j); missing other modalities are left out of the tuple."""

    def rows(self, feats: Feats, masks: Masks, anchor: str) -> torch.Tensor:
        other_mask = torch.stack([present(feats, masks, n) for n in self.others(feats, anchor)], dim=1)
        return (present(feats, masks, anchor) & other_mask.any(dim=1)).nonzero().squeeze(1)

    def __call__(self, feats, masks, anchor, anchor_rows, tuple_rows):
        others = self.others(feats, anchor)
        other_mask = torch.stack([present(feats, masks, n)[tuple_rows] for n in others], dim=1)
        tuples = torch.stack([feats[n][tuple_rows] for n in others], dim=1)
        mask = None if bool(other_mask.all()) else other_mask
        return volume_matrix(feats[anchor][anchor_rows], tuples, mask=mask)


class RegularisedVolume(VolumeDistance):
    """``volume(anchor_i, others_j) - weight * sum_o cos(anchor_i, o_j)``: cosine-regularised volume logits.

    The cosine terms give the logits the sign and the slope that the volume alone lacks at a
    random start (where all vectors are nearly orthogonal), so GRAM can train from scratch
    when every modality anchors in turn (weight 2 on the digits, see BENCHMARKS.md).
    Missing other modalities add no cosine term.
    """

    def __init__(self, weight: float = 1.0):
        self.weight = weight

    def __call__(self, feats, masks, anchor, anchor_rows, tuple_rows):
        volumes = super().__call__(feats, masks, anchor, anchor_rows, tuple_rows)
        anchors = feats[anchor][anchor_rows].to(volumes.dtype)
        cosines = sum(anchors @ (feats[o][tuple_rows].to(volumes.dtype) * present(feats, masks, o)[tuple_rows, None]).T
                      for o in self.others(feats, anchor))
        return volumes - self.weight * cosines


class AreaDistance(TupleDistance):
    """The area of the triangle (anchor_i, other1_j, other2_j), over samples with all three present.

    ``squared=True`` gives TRIANGLE's training quantity (``2 area^2``, its authors' code).
    """

    def __init__(self, squared: bool = True):
        self.squared = squared

    def others(self, feats: Feats, anchor: str) -> list[str]:
        others = super().others(feats, anchor)
        if len(others) != 2:
            raise ValueError(f"TRIANGLE needs exactly three modalities, got {sorted(feats)}")
        return others

    def rows(self, feats: Feats, masks: Masks, anchor: str) -> torch.Tensor:
        names = (anchor, *self.others(feats, anchor))
        return torch.stack([present(feats, masks, n) for n in names]).all(dim=0).nonzero().squeeze(1)

    def __call__(self, feats, masks, anchor, anchor_rows, tuple_rows):
        tuples = torch.stack([feats[n][tuple_rows] for n in self.others(feats, anchor)], dim=1)
        return area_matrix(feats[anchor][anchor_rows], tuples, squared=self.squared)
