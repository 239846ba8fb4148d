"""Anchor-vs-tuple distances: which samples take part for an anchor, and their distance matrices by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gramx.losses.distances import AreaDistance, VolumeDistance, presence


def feats(b: int = 5, names=("text", "video", "audio"), seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {n: F.normalize(torch.randn(b, 6, generator=gen, dtype=torch.float64), dim=-1) for n in names}


def gram_volume(*vectors: torch.Tensor) -> torch.Tensor:
    x = torch.stack(vectors)
    return torch.linalg.det(x @ x.T).clamp(min=0).sqrt()


def test_presence_is_all_true_without_masks_and_names_modalities_the_batch_lacks():
    batch = feats()
    masks = {"video": torch.tensor([1, 0, 1, 1, 0])}
    found = presence(batch, masks, ["text", "video"])
    assert found["text"].all() and found["video"].tolist() == [True, False, True, True, False]
    with pytest.raises(KeyError, match="loss needs modalities \\['depth'\\]"):
        presence(batch, None, ["text", "depth"])


def test_the_volume_is_the_gram_determinant_and_missing_others_are_left_out_of_the_tuple():
    batch = feats()
    masks = {"audio": torch.tensor([True, True, False, True, True]), "text": torch.tensor([True] * 4 + [False])}
    distance = VolumeDistance()
    matrix, rows = distance.matrix(batch, masks, "text")
    assert rows.tolist() == [0, 1, 2, 3]  # row 4 has no anchor
    for i in rows.tolist():
        for j in rows.tolist():
            others = [batch["audio"][j], batch["video"][j]] if masks["audio"][j] else [batch["video"][j]]
            torch.testing.assert_close(matrix[i, j], gram_volume(batch["text"][i], *others))
    sub = distance(batch, masks, "text", torch.tensor([1, 3]), torch.tensor([0, 2]))
    torch.testing.assert_close(sub, matrix[[1, 3]][:, [0, 2]])  # a process's rows of the global matrix


def test_a_sample_with_its_anchor_alone_takes_no_part():
    masks = {"video": torch.tensor([True, False, True]), "audio": torch.tensor([True, False, False])}
    assert VolumeDistance().rows(feats(3), masks, "text").tolist() == [0, 2]
    with pytest.raises(ValueError, match="at least two modalities"):
        VolumeDistance().rows(feats(3, names=("text",)), None, "text")


def test_the_area_needs_all_three_and_is_half_the_parallelogram():
    batch = feats()
    masks = {"video": torch.tensor([True, True, False, True, True])}
    matrix, rows = AreaDistance(squared=False).matrix(batch, masks, "text")
    assert rows.tolist() == [0, 1, 3, 4]
    a, b, c = batch["text"][0], batch["audio"][3], batch["video"][3]
    torch.testing.assert_close(matrix[0, 2], gram_volume(b - a, c - a) / 2)
    squared, _ = AreaDistance().matrix(batch, masks, "text")
    torch.testing.assert_close(squared, 2 * matrix**2)  # TRIANGLE's training quantity
    with pytest.raises(ValueError, match="TRIANGLE needs exactly three modalities"):
        AreaDistance().rows(feats(names=("text", "video", "audio", "depth")), None, "text")
