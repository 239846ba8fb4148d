"""Ex-MCR bridging on embeddings: aggregation, identity-initialised projector, unpaired training."""

import torch
import torch.nn.functional as F

from gramx.extend.bridge import BridgePools, aggregate, fit_projector, pseudo_tuples
from gramx.model.heads import Projector
from gramx.evaluate.metrics import retrieval_metrics


def _space(rotation, centres, labels, offset, generator, noise=0.1):
    x = centres[labels] + offset + noise * torch.randn(len(labels), centres.shape[1], generator=generator)
    return F.normalize(x @ rotation.T, dim=-1)


def _two_spaces(n=400, classes=10, dim=32, seed=0):
    """Space A (text, image) and space B (text, audio) of the same classes, rotated differently."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(classes, dim, generator=g), dim=-1)
    rot_a, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))
    rot_b, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))
    offsets = {m: 0.3 * F.normalize(torch.randn(dim, generator=g), dim=0) for m in ("text", "image", "audio")}
    labels = {m: torch.randint(classes, (n,), generator=g) for m in ("text", "image", "audio", "test_a", "test_i")}
    text_noise = torch.randn(n, dim, generator=g) * 0.1  # the same captions, seen by both spaces
    text = centres[labels["text"]] + offsets["text"] + text_noise
    pools = BridgePools(
        shared_a=F.normalize(text @ rot_a.T, dim=-1),
        shared_b=F.normalize(text @ rot_b.T, dim=-1),
        a_pools={"image": _space(rot_a, centres, labels["image"], offsets["image"], g)},
        b_pools={"audio": _space(rot_b, centres, labels["audio"], offsets["audio"], g)},
    )
    test_audio = _space(rot_b, centres, labels["test_a"], offsets["audio"], g)
    test_image = _space(rot_a, centres, labels["test_i"], offsets["image"], g)
    return pools, test_audio, test_image, labels["test_a"], labels["test_i"]


def test_aggregate_is_a_normalised_softmax_average():
    q, keys, memory = torch.randn(3, 4), torch.randn(5, 4), torch.randn(5, 6)
    expected = F.normalize(torch.softmax(q @ keys.T / 0.5, dim=1) @ memory, dim=-1)
    torch.testing.assert_close(aggregate(q, keys, memory, tau=0.5, chunk=2), expected)


def test_projector_starts_as_identity():
    x = F.normalize(torch.randn(16, 24), dim=-1)
    projector = Projector(24, 24, hidden=32, depth=3)
    torch.testing.assert_close(projector.train()(x), x)
    torch.testing.assert_close(projector.eval()(x), x)


def test_pseudo_tuples_cover_every_modality_of_both_spaces():
    pools = _two_spaces(n=50)[0]
    tuples = pseudo_tuples(pools, "text", noise=0.03, generator=torch.Generator().manual_seed(0))
    assert sorted(tuples.b) == ["audio", "text"] and sorted(tuples.a) == ["image", "text"]
    assert len(tuples) == 150  # text-, audio- and image-centric
    for side in (tuples.a, tuples.b):
        for x in side.values():
            torch.testing.assert_close(x.norm(dim=-1), torch.ones(150))


def test_bridge_makes_unpaired_audio_find_images_of_its_class():
    pools, audio, image, audio_labels, image_labels = _two_spaces()
    positives = audio_labels[:, None] == image_labels[None, :]
    before = retrieval_metrics(audio @ image.T, higher_is_better=True, positives=positives)["R@1"]
    projector = Projector(32, 32, hidden=64)
    losses = fit_projector(pseudo_tuples(pools, "text"), projector, steps=100, batch_size=128,
                           lr=3e-3, progress=False)
    assert losses[-1] < losses[0]
    with torch.no_grad():
        after = retrieval_metrics(projector(audio) @ image.T, higher_is_better=True, positives=positives)["R@1"]
    assert before < 35 and after > 80, (before, after)
