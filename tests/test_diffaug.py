"""DiffAugment: shapes, reproducibility from its generator, hand-checked transforms, errors."""

from __future__ import annotations

import pytest
import torch

from pipeline.diffaug import AUGMENTS, cutout, diff_augment, parse_policy, saturation, translation


def _batch(c=3, h=8, w=8, n=6, seed=0):
    return torch.rand((n, c, h, w), generator=torch.Generator().manual_seed(seed)) * 2 - 1


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 28, 28), (3, 9, 13)])
def test_keeps_shape_and_dtype(policy, shape):
    x = _batch(*shape)
    out = diff_augment(x, policy, gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.equal(out, x)


def test_reproducible_from_its_generator_and_only_from_it():
    x = _batch()
    policy = "color,translation,cutout"
    torch.manual_seed(0)
    a = diff_augment(x, policy, gen(5))
    torch.manual_seed(1)  # the global RNG plays no part
    b = diff_augment(x, policy, gen(5))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, diff_augment(x, policy, gen(6)))
    # the generator advances: a second call with the same generator differs
    g = gen(5)
    first = diff_augment(x, policy, g)
    assert not torch.equal(first, diff_augment(x, policy, g))


def test_translation_moves_content_with_zero_fill():
    x = torch.zeros(4, 1, 8, 8)
    x[:, 0, 3, 4] = 1.0  # one bright pixel per image
    out = translation(x, gen(11))
    # redraw the shifts the transform drew: ratio 1/8 of 8 px -> shifts in {-1, 0, 1}
    g = gen(11)
    dy = torch.randint(-1, 2, (4, 1, 1), generator=g).view(-1)
    dx = torch.randint(-1, 2, (4, 1, 1), generator=g).view(-1)
    for i in range(4):
        expected = torch.zeros(8, 8)
        expected[3 + dy[i], 4 + dx[i]] = 1.0
        torch.testing.assert_close(out[i, 0], expected)
    # content shifted off the edge is gone, the uncovered border is 0
    edge = torch.ones(64, 1, 8, 8)
    shifted = translation(edge, gen(0))
    assert (shifted == 0).any() and set(shifted.unique().tolist()) <= {0.0, 1.0}


def test_cutout_zeroes_one_clipped_square():
    x = torch.ones(32, 1, 8, 8)
    out = cutout(x, gen(2))
    for img in out[:, 0]:
        rows = (img == 0).any(dim=1).nonzero().view(-1)
        cols = (img == 0).any(dim=0).nonzero().view(-1)
        # a half-size (4x4) square centred in the image, clipped at the border: 2..4 per side
        assert 2 <= len(rows) <= 4 and 2 <= len(cols) <= 4
        assert (img == 0).sum() == len(rows) * len(cols)
        assert rows.diff().eq(1).all() and cols.diff().eq(1).all()


def test_saturation_is_identity_on_one_channel():
    x = _batch(c=1)
    torch.testing.assert_close(saturation(x, gen()), x)


def test_differentiable_and_channels_last_ok():
    x = _batch().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    out = diff_augment(x, "color,translation,cutout", gen())
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    y = diff_augment(x.detach().contiguous(), "color,translation,cutout", gen())
    torch.testing.assert_close(out.detach(), y)


def test_policy_parsing_and_errors():
    assert parse_policy(" color , cutout ") == ["color", "cutout"]
    assert parse_policy("") == []
    x = _batch()
    assert diff_augment(x, "", gen()) is x
    with pytest.raises(ValueError, match="valid: color, cutout, translation"):
        diff_augment(x, "color,flip", gen())
    assert set(AUGMENTS) == {"color", "translation", "cutout"}


def test_probability_zero_leaves_every_image_and_one_is_the_plain_policy():
    from pipeline.diffaug import diff_augment

    x = torch.rand(8, 1, 8, 8) * 2 - 1
    assert torch.equal(diff_augment(x, "color,translation", torch.Generator().manual_seed(1), p=0.0), x)
    assert torch.equal(diff_augment(x, "color,translation", torch.Generator().manual_seed(1), p=1.0),
                       diff_augment(x, "color,translation", torch.Generator().manual_seed(1)))
    # p = 0.5 with a single transform: each image is either itself or its transformed self
    half = diff_augment(x, "cutout", torch.Generator().manual_seed(2), p=0.5)
    full = diff_augment(x, "cutout", torch.Generator().manual_seed(2))
    same = [torch.equal(half[i], x[i]) for i in range(8)]
    assert all(s or torch.equal(half[i], full[i]) for i, s in enumerate(same)) and 0 < sum(same) < 8


def test_adaptive_strength_follows_the_sign_of_the_real_logits():
    from pipeline.diffaug import AdaptiveStrength

    ada = AdaptiveStrength(target=0.6, images=400, batch=10)  # each interval moves p by 4 * 10 / 400
    assert ada.p == 0.0
    for _ in range(3):
        ada.observe(torch.tensor([1.0, 2.0]))
    assert ada.p == 0.0  # adjusted only at the end of an interval of 4 steps
    ada.observe(torch.tensor([1.0, 2.0]))
    assert ada.p == pytest.approx(0.1)
    for _ in range(4):  # E[sign] = 0.5 < 0.6: D is not overfitting, less augmentation
        ada.observe(torch.tensor([1.0, -1.0, 1.0, 1.0]))
    assert ada.p == pytest.approx(0.0)
    for _ in range(8):
        ada.observe(torch.tensor([-1.0]))
    assert ada.p == 0.0  # never below 0
    for _ in range(4 * 12):
        ada.observe(torch.tensor([3.0]))
    assert ada.p == 1.0  # never above 1
    state = ada.state()
    other = AdaptiveStrength(0.6, 400, 10)
    other.restore(state)
    assert other.state() == state
