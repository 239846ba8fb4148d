"""The heads into the shared space: linear, MLP or identity heads; a projector that starts as the identity."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gramx.errors import ConfigError
from gramx.model.heads import ProjectionHead, Projector
from gramx.model.schema import HeadConfig


@pytest.mark.parametrize("cfg, layers", [(HeadConfig(), 1), (HeadConfig(hidden=16), 2)])
def test_a_head_maps_features_into_the_space(cfg, layers):
    head = ProjectionHead(12, 8, cfg)
    assert head(torch.randn(5, 12)).shape == (5, 8)
    assert sum(isinstance(m, torch.nn.Linear) for m in head.modules()) == layers


def test_an_identity_head_passes_features_of_the_spaces_size_through():
    x = torch.randn(3, 8)
    assert torch.equal(ProjectionHead(8, 8, HeadConfig(identity=True))(x), x)
    with pytest.raises(ConfigError, match="the encoder gives 12, the space has 8") as info:
        ProjectionHead(12, 8, HeadConfig(identity=True))
    assert "head.identity" in info.value.hint


def test_a_new_projector_is_the_identity_on_unit_vectors_and_trains_like_any_module():
    torch.manual_seed(0)
    projector = Projector(8, 8, hidden=16, depth=2).eval()
    x = F.normalize(torch.randn(4, 8), dim=-1)
    torch.testing.assert_close(projector(x), x)
    assert projector.config() == {"dim_in": 8, "dim_out": 8, "hidden": 16, "depth": 2}
    wider = Projector(6, 10, hidden=4, depth=1).train()
    out = wider(torch.randn(4, 6))
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(4))
    out.sum().backward()
    assert all(p.grad is not None for p in wider.parameters() if p.requires_grad)
