"""Contrastive losses (gramx.losses.contrastive) against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gramx.losses.contrastive import (
    DataAnchorMatching,
    GramLoss,
    PairwiseInfoNCE,
    Temperature,
    symmetric_cross_entropy,
)


def unit(*shape, generator=None, dtype=torch.float64):
    return F.normalize(torch.randn(*shape, dtype=torch.float64, generator=generator), dim=-1).to(dtype)


def batch(names, b, d, gen, dtype=torch.float64):
    return {n: unit(b, d, generator=gen, dtype=dtype) for n in names}


def sqrt_det(vectors: list[torch.Tensor]) -> torch.Tensor:
    x = torch.stack(vectors).double()
    return torch.linalg.det(x @ x.T).clamp(min=0).sqrt()


def hand_ce(logits: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Mean cross-entropy of rows with target i, label smoothing written out."""
    n = logits.shape[0]
    logp = logits.log_softmax(dim=1)
    return (-(1 - smoothing) * logp.diagonal() - smoothing / n * logp.sum(dim=1)).mean()


def hand_gram_logits(feats, anchor, temperature, masks=None):
    """``-sqrt(det)/t`` over the rows with the anchor and at least one other modality."""
    others = sorted(n for n in feats if n != anchor)
    b = feats[anchor].shape[0]
    present = {n: (masks[n] if masks and n in masks else torch.ones(b, dtype=torch.bool)) for n in feats}
    rows = [i for i in range(b) if present[anchor][i] and any(present[o][i] for o in others)]
    logits = torch.empty(len(rows), len(rows), dtype=torch.float64)
    for a, i in enumerate(rows):
        for c, j in enumerate(rows):
            vectors = [feats[anchor][i]] + [feats[o][j] for o in others if present[o][j]]
            logits[a, c] = -sqrt_det(vectors) / temperature
    return logits


def hand_gram_loss(feats, anchor, temperature, smoothing, masks=None):
    logits = hand_gram_logits(feats, anchor, temperature, masks)
    return (hand_ce(logits, smoothing) + hand_ce(logits.T, smoothing)) / 2


pytestmark = pytest.mark.usefixtures("one_thread")  # these tensors are tiny: one thread avoids OpenMP waits


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(7)


# ------------------------------------------------------------------------- temperature


def test_temperature_starts_at_its_value_is_learnable_and_clamped():
    t = Temperature(0.07)
    assert t().item() == pytest.approx(0.07, rel=1e-6)
    assert t.log_t.requires_grad
    with torch.no_grad():
        t.log_t.fill_(math.log(5.0))
    assert t().item() == pytest.approx(1.0, rel=1e-6)  # upper bound
    with torch.no_grad():
        t.log_t.fill_(math.log(1e-4))
    assert t().item() == pytest.approx(0.01, rel=1e-6)  # lower bound
    fixed = Temperature(0.2, learnable=False)
    assert fixed().item() == pytest.approx(0.2) and not any(p.requires_grad for p in fixed.parameters())
    with pytest.raises(ValueError):
        Temperature(2.0)


def test_gram_loss_temperature_gets_a_gradient(gen):
    loss_fn = GramLoss(anchor="text", temperature=0.1)
    assert loss_fn.temperature().item() == pytest.approx(0.1, rel=1e-6)
    loss_fn(batch(["text", "video", "audio"], 6, 8, gen)).backward()
    grad = loss_fn.temperature.log_t.grad
    assert grad is not None and grad.abs() > 0
    # clamped at a bound: no gradient pushes it further
    loss_fn.zero_grad()
    with torch.no_grad():
        loss_fn.temperature.log_t.fill_(math.log(1e-3))
    loss_fn(batch(["text", "video", "audio"], 6, 8, gen)).backward()
    assert loss_fn.temperature.log_t.grad.abs() == 0


# ---------------------------------------------------------------------------- GramLoss


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_gram_loss_equals_hand_computation(smoothing, gen):
    feats = batch(["text", "video", "audio", "subtitles"], 5, 6, gen)
    loss_fn = GramLoss(anchor="text", temperature=0.07, label_smoothing=smoothing)
    loss = loss_fn(feats)
    t = loss_fn.temperature().item()  # 0.07 up to the float32 rounding of log(t)
    assert t == pytest.approx(0.07, rel=1e-6)
    torch.testing.assert_close(loss, hand_gram_loss(feats, "text", t, smoothing), rtol=1e-12, atol=1e-12)


def test_gram_loss_default_label_smoothing_is_the_contract_example(gen):
    feats = batch(["text", "video", "audio"], 4, 5, gen)
    torch.testing.assert_close(GramLoss()(feats), hand_gram_loss(feats, "text", 0.07, 0.1))


def test_gram_loss_uses_both_directions(gen):
    feats = batch(["text", "video", "audio"], 6, 4, gen)
    logits = hand_gram_logits(feats, "text", 0.07)
    rows, cols = hand_ce(logits, 0.1), hand_ce(logits.T, 0.1)
    assert (rows - cols).abs() > 1e-2, "the example should tell the two directions apart"
    loss = GramLoss(anchor="text", temperature=0.07, label_smoothing=0.1)(feats)
    torch.testing.assert_close(loss, (rows + cols) / 2)
    torch.testing.assert_close(symmetric_cross_entropy(logits, 0.1).mean(), (rows + cols) / 2)


def test_gram_loss_anchor_all_averages_every_anchor(gen):
    feats = batch(["text", "video", "audio"], 5, 6, gen)
    loss = GramLoss(anchor="all", temperature=0.1, label_smoothing=0.1)(feats)
    each = [hand_gram_loss(feats, a, 0.1, 0.1) for a in ["audio", "text", "video"]]
    torch.testing.assert_close(loss, torch.stack(each).mean())


def test_gram_loss_masks_equal_dropping_the_missing_items(gen):
    feats = batch(["text", "video", "audio", "depth"], 6, 8, gen)
    masks = {
        "audio": torch.tensor([True, False, True, True, False, True]),
        "depth": torch.tensor([False, False, True, True, True, False]),
        "text": torch.tensor([True, True, True, False, True, True]),  # row 3 has no anchor
    }
    loss = GramLoss(anchor="text", temperature=0.1, label_smoothing=0.1)(feats, masks)
    torch.testing.assert_close(loss, hand_gram_loss(feats, "text", 0.1, 0.1, masks))
    # the anchor-less row drops out entirely: same as removing it from the batch
    keep = torch.tensor([0, 1, 2, 4, 5])
    sub = {n: v[keep] for n, v in feats.items()}
    sub_masks = {n: m[keep] for n, m in masks.items()}
    torch.testing.assert_close(loss, GramLoss(anchor="text", temperature=0.1)(sub, sub_masks))


def test_gram_loss_modality_missing_everywhere_equals_leaving_it_out(gen):
    feats = batch(["text", "video", "audio"], 5, 8, gen)
    masks = {"audio": torch.zeros(5, dtype=torch.bool)}
    feats_with_garbage = dict(feats, audio=torch.full_like(feats["audio"], float("nan")))
    loss_fn = GramLoss(anchor="text", temperature=0.1)
    without = loss_fn({"text": feats["text"], "video": feats["video"]})
    torch.testing.assert_close(loss_fn(feats_with_garbage, masks), without)


def test_gram_loss_errors(gen):
    with pytest.raises(KeyError, match="text"):
        GramLoss(anchor="text")(batch(["video", "audio"], 3, 4, gen))
    with pytest.raises(ValueError):
        GramLoss(anchor="text")(batch(["text"], 3, 4, gen))
    feats = batch(["text", "video"], 3, 4, gen)
    with pytest.raises(ValueError):
        GramLoss(anchor="text")(feats, {"text": torch.zeros(3, dtype=torch.bool)})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gram_loss_degenerate_batch_is_finite(dtype, gen):
    feats = batch(["text", "video", "audio"], 6, 8, gen, dtype=dtype)
    feats["audio"] = feats["video"].clone()  # every candidate tuple has zero volume
    feats["text"][:3] = feats["video"][:3]  # some anchors lie in their tuple's span
    feats["video"][4] = feats["video"][5]  # two identical tuples
    feats["audio"][4] = feats["audio"][5]
    feats = {n: v.requires_grad_() for n, v in feats.items()}
    loss = GramLoss(anchor="text")(feats)
    assert torch.isfinite(loss)
    grads = torch.autograd.grad(loss, list(feats.values()))
    assert all(torch.isfinite(g).all() for g in grads)


def test_gram_loss_float32_gradients_match_float64_and_stay_bounded(gen):
    """Positives close to their tuple's span (small volume) must not blow up float32 gradients."""
    b, d = 32, 128
    video, audio, noise = unit(b, d, generator=gen), unit(b, d, generator=gen), unit(b, d, generator=gen)
    for offset in [1e-2, 1e-3, 1e-4, 0.0]:
        text = F.normalize(video + 0.5 * audio + offset * noise, dim=-1)
        grads = {}
        for dtype in [torch.float32, torch.float64]:
            feats = {n: v.to(dtype).requires_grad_() for n, v in {"text": text, "video": video, "audio": audio}.items()}
            loss = GramLoss(anchor="text", temperature=0.07)(feats)
            grads[dtype] = torch.cat(torch.autograd.grad(loss, list(feats.values()))).double()
        g32, g64 = grads[torch.float32], grads[torch.float64]
        assert torch.isfinite(g32).all()
        if offset >= 1e-2:  # float32 resolves these volumes: same gradient to ~0.2%
            torch.testing.assert_close(g32, g64, rtol=0, atol=1e-2 * g64.abs().max().item())
        # smaller volumes than float32 resolves: bounded like the exact gradient
        assert g32.norm() < 2 * g64.norm() + 1e-3


def test_gram_loss_under_autocast_equals_float32(gen):
    feats = batch(["text", "video", "audio"], 8, 16, gen, dtype=torch.float32)
    loss_fn = GramLoss(anchor="text")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = loss_fn(feats)
    torch.testing.assert_close(auto.float(), loss_fn(feats), rtol=1e-5, atol=1e-6)


def descend(params: list[torch.Tensor], loss_fn, steps: int, lr: float) -> list[float]:
    """A few lines of Adam (torch.optim would import torch._dynamo: seconds per test run)."""
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    losses = []
    for t in range(1, steps + 1):
        loss = loss_fn()
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g, m_, v_ in zip(params, grads, m, v):
                m_.mul_(0.9).add_(g, alpha=0.1)
                v_.mul_(0.999).addcmul_(g, g, value=0.001)
                p -= lr * (m_ / (1 - 0.9**t)) / ((v_ / (1 - 0.999**t)).sqrt() + 1e-8)
        losses.append(loss.item())
    return losses


def test_gram_loss_trains_a_toy_alignment():
    """Learnable embeddings of 3 modalities: the loss falls by more than half."""
    torch.manual_seed(0)
    raw = {n: torch.randn(16, 8, requires_grad=True) for n in ["text", "video", "audio"]}
    loss_fn = GramLoss(anchor="text", temperature=0.1)
    losses = descend(
        list(raw.values()) + list(loss_fn.parameters()),
        lambda: loss_fn({n: F.normalize(v, dim=-1) for n, v in raw.items()}),
        steps=60,
        lr=0.05,
    )
    assert losses[-1] < 0.5 * losses[0]


# --------------------------------------------------------------------- PairwiseInfoNCE


def hand_pair_loss(a, b, t, smoothing=0.0):
    logits = (a @ b.T) / t  # inputs are unit vectors: cosine = dot product
    return (hand_ce(logits, smoothing) + hand_ce(logits.T, smoothing)) / 2


def test_pairwise_anchored_equals_hand_computation(gen):
    feats = batch(["text", "video", "audio"], 6, 8, gen)
    loss = PairwiseInfoNCE(anchor="text", temperature=0.07)(feats)
    expected = (hand_pair_loss(feats["text"], feats["audio"], 0.07) + hand_pair_loss(feats["text"], feats["video"], 0.07)) / 2
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)


def test_pairwise_all_pairs_equals_hand_computation(gen):
    feats = batch(["text", "video", "audio"], 6, 8, gen)
    loss = PairwiseInfoNCE(anchor=None, temperature=0.1, label_smoothing=0.1)(feats)
    pairs = [("audio", "text"), ("audio", "video"), ("text", "video")]
    expected = torch.stack([hand_pair_loss(feats[a], feats[b], 0.1, 0.1) for a, b in pairs]).mean()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)


def test_pairwise_masks_use_rows_where_both_are_present(gen):
    feats = batch(["text", "video", "audio"], 6, 8, gen)
    masks = {"audio": torch.tensor([True, True, False, True, False, True])}
    loss = PairwiseInfoNCE(anchor="text", temperature=0.07)(feats, masks)
    rows = masks["audio"]
    expected = (
        hand_pair_loss(feats["text"][rows], feats["audio"][rows], 0.07) + hand_pair_loss(feats["text"], feats["video"], 0.07)
    ) / 2
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)


def test_pairwise_temperature_is_learnable(gen):
    loss_fn = PairwiseInfoNCE(anchor="text", temperature=0.05)
    assert loss_fn.temperature().item() == pytest.approx(0.05, rel=1e-6)
    loss_fn(batch(["text", "video"], 5, 8, gen)).backward()
    assert loss_fn.temperature.log_t.grad.abs() > 0


# ------------------------------------------------------------------ DataAnchorMatching


def test_dam_loss_is_finite_and_differentiable(gen):
    feats = batch(["text", "video", "audio"], 8, 16, gen, dtype=torch.float32)
    masks = {"audio": torch.tensor([True, False] * 4)}
    dam = DataAnchorMatching(["text", "video", "audio"], dim=16)
    loss = dam(feats, masks)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in dam.parameters())


def test_dam_never_samples_the_positive_as_a_negative(gen, monkeypatch):
    torch.manual_seed(0)
    feats = batch(["text", "video", "audio"], 6, 8, gen, dtype=torch.float32)
    # make the hard negatives very hard: tuples nearly identical to each other
    feats["video"] = F.normalize(feats["video"][:1] + 1e-3 * feats["video"], dim=-1)
    masks = {"text": torch.tensor([True, True, False, True, True, True])}  # rows are not 0..n-1
    dam = DataAnchorMatching(["text", "video", "audio"], dim=8, temperature=1e-3)
    seen = []
    original = dam.score

    def spy(feats_, masks_, anchor_rows, tuple_rows):
        seen.append((anchor_rows.clone(), tuple_rows.clone()))
        return original(feats_, masks_, anchor_rows, tuple_rows)

    monkeypatch.setattr(dam, "score", spy)
    for _ in range(200):
        dam(feats, masks)
    rows = torch.tensor([0, 1, 3, 4, 5])
    n = len(rows)
    for anchor_rows, tuple_rows in seen:
        assert torch.equal(anchor_rows[:n], rows) and torch.equal(tuple_rows[:n], rows)  # positives
        negatives_a, negatives_t = anchor_rows[n:], tuple_rows[n:]
        assert (negatives_a != negatives_t).all()
        assert torch.isin(negatives_a, rows).all() and torch.isin(negatives_t, rows).all()


def test_dam_trains_on_a_toy_problem(gen):
    torch.manual_seed(0)
    feats = batch(["text", "video", "audio"], 16, 8, gen, dtype=torch.float32)
    dam = DataAnchorMatching(["text", "video", "audio"], dim=8, hidden=64)
    losses = descend(list(dam.parameters()), lambda: dam(feats), steps=50, lr=1e-2)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first


def test_dam_checks_its_inputs(gen):
    with pytest.raises(ValueError):
        DataAnchorMatching(["video", "audio"], dim=8, anchor="text")
    dam = DataAnchorMatching(["text", "video"], dim=8)
    with pytest.raises(KeyError):
        dam(batch(["text"], 4, 8, gen, dtype=torch.float32))
    with pytest.raises(ValueError):
        dam(batch(["text", "video"], 1, 8, gen, dtype=torch.float32))


# --------------------------------------------------------------------------- TRIANGLE, Symile, regularised GRAM


def hand_triangle_loss(feats, anchor, temperature, smoothing, rows):
    """TRIANGLE's loss from its utils/area.py and model/triangle.py, written out on the given rows."""
    others = sorted(n for n in feats if n != anchor)
    t, v, a = (feats[n][rows] for n in (anchor, *others))
    u = t.unsqueeze(1) - v.unsqueeze(0)
    w = t.unsqueeze(1) - a.unsqueeze(0)
    area = ((u ** 2).sum(2) * (w ** 2).sum(2) - (u * w).sum(2) ** 2) / 2
    logits = -area / temperature
    return (hand_ce(logits, smoothing) + hand_ce(logits.T, smoothing)) / 2


def test_triangle_loss_equals_the_reference_and_drops_incomplete_rows(gen):
    from gramx.losses.contrastive import TriangleLoss

    feats = batch(["text", "video", "audio"], 6, 8, gen)
    loss = TriangleLoss(anchor="text", temperature=0.1, label_smoothing=0.1)
    torch.testing.assert_close(loss(feats).double(), hand_triangle_loss(feats, "text", 0.1, 0.1, list(range(6))))
    masks = {"audio": torch.tensor([True, True, False, True, True, True])}
    torch.testing.assert_close(loss(feats, masks).double(), hand_triangle_loss(feats, "text", 0.1, 0.1, [0, 1, 3, 4, 5]))
    with pytest.raises(ValueError, match="exactly three modalities"):
        loss(batch(["text", "video"], 4, 8, gen))


def test_symile_loss_equals_the_symile_package(gen):
    from symile import Symile

    from gramx.losses.contrastive import SymileLoss

    names = ["a", "b", "c"]
    feats = batch(names, 7, 12, gen)
    for negatives in ("n", "n_squared"):
        torch.manual_seed(3)
        reference = Symile(negatives)([feats[n] for n in names], 1 / 0.2)
        torch.manual_seed(3)  # the same permutations, drawn in the same order
        ours = SymileLoss(temperature=0.2, negatives=negatives)(feats)
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)


def test_symile_masks_equal_dropping_the_missing_modality(gen):
    from gramx.losses.contrastive import SymileLoss

    feats = batch(["a", "b", "c"], 6, 8, gen)
    absent = {"c": torch.zeros(6, dtype=torch.bool)}
    loss = SymileLoss(temperature=0.1, generator=torch.Generator().manual_seed(0))
    again = SymileLoss(temperature=0.1, generator=torch.Generator().manual_seed(0))
    dropped = {n: feats[n] for n in ("a", "b")}
    torch.testing.assert_close(loss(feats, absent), again(dropped))
    # two modalities: the multilinear product is the dot product, so Symile is one-way InfoNCE per anchor
    logits = feats["a"] @ feats["b"].T / 0.1
    target = torch.arange(6)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    torch.testing.assert_close(SymileLoss(temperature=0.1, negatives="n_squared")(dropped), expected)


def test_regularised_volumes_subtract_the_anchors_cosines(gen):
    from gramx.losses.distances import RegularisedVolume
    from gramx.losses.contrastive import anchor_volumes

    feats = batch(["text", "video", "audio"], 5, 8, gen)
    volumes, rows = anchor_volumes(feats, None, "text")
    regularised, _ = RegularisedVolume(0.5).matrix(feats, None, "text")
    cosines = feats["text"] @ feats["video"].T + feats["text"] @ feats["audio"].T
    torch.testing.assert_close(regularised, volumes - 0.5 * cosines)
    loss = GramLoss(anchor="text", temperature=0.1, distance=RegularisedVolume(0.5))
    assert torch.isfinite(loss(feats))


@pytest.mark.parametrize("make", ["triangle", "symile", "regularised"])
def test_new_losses_pass_gradcheck(gen, make):
    from gramx.losses.distances import RegularisedVolume
    from gramx.losses.contrastive import SymileLoss, TriangleLoss

    names = ["text", "video", "audio"]
    feats = {n: v.requires_grad_(True) for n, v in batch(names, 4, 5, gen).items()}
    loss = {
        "triangle": TriangleLoss(temperature=Temperature(0.1, learnable=False)),
        "symile": SymileLoss(temperature=Temperature(0.1, learnable=False), negatives="n_squared"),
        "regularised": GramLoss(temperature=Temperature(0.1, learnable=False), label_smoothing=0.0,
                                distance=RegularisedVolume(0.5)),
    }[make]
    assert torch.autograd.gradcheck(lambda *xs: loss(dict(zip(names, xs))).double(), tuple(feats[n] for n in names),
                                    atol=1e-5, rtol=1e-3)


# --------------------------------------------------------------------------- the local loss


def _local_split(feats, losses_fn, processes: int):
    """The sum over processes of each one's local loss, and the gradients of that sum."""
    b = next(iter(feats.values())).shape[0]
    owner = torch.arange(b) % processes
    total = sum(losses_fn(feats, owner == p) for p in range(processes))
    return total, torch.autograd.grad(total, list(feats.values()))


@pytest.mark.parametrize("make", ["gram", "gram all", "triangle", "symile", "symile n_squared", "pairwise",
                                  "pairwise_all", "dam"])
def test_local_losses_sum_to_the_global_loss(gen, make):
    """Each process's terms against the whole batch, summed over processes: the global loss and its gradients."""
    from gramx.losses.contrastive import SymileLoss, TriangleLoss

    names = ["text", "video", "audio"]
    feats = {n: v.requires_grad_(True) for n, v in batch(names, 7, 8, gen).items()}
    masks = {"audio": torch.tensor([True, True, False, True, True, False, True]),
             "text": torch.tensor([True] * 6 + [False])}
    torch.manual_seed(0)
    loss = {
        "gram": GramLoss(temperature=0.1), "gram all": GramLoss(anchor="all", temperature=0.1),
        "triangle": TriangleLoss(temperature=0.1), "symile": SymileLoss(temperature=0.1),
        "symile n_squared": SymileLoss(temperature=0.1, negatives="n_squared"),
        "pairwise": PairwiseInfoNCE(temperature=0.1), "pairwise_all": PairwiseInfoNCE(anchor=None, temperature=0.1),
        "dam": DataAnchorMatching(names, dim=8, hidden=16),
    }[make]

    def seeded(f, local=None):  # the same negatives (Symile's shuffles, DAM's draws) in every call
        with torch.random.fork_rng():
            torch.manual_seed(1)
            return loss(f, masks, local=local)

    expected = seeded(feats)
    expected_grads = torch.autograd.grad(expected, list(feats.values()))
    for processes in (2, 3):
        total, grads = _local_split(feats, seeded, processes)
        torch.testing.assert_close(total.double(), expected.double(), rtol=1e-6, atol=1e-7)
        for g, e in zip(grads, expected_grads):
            torch.testing.assert_close(g.double(), e.double(), rtol=1e-5, atol=1e-7)
