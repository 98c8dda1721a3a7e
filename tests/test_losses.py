"""GAN losses against hand-computed values, and the gradient penalty against known gradients."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.losses import LOSSES, get_loss, gradient_penalty

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def test_registry_names_are_the_config_contract():
    assert set(LOSSES) == {"bce", "hinge", "lsgan", "wgan-gp"}
    assert [k for k, v in LOSSES.items() if v.gradient_penalty] == ["wgan-gp"]


def test_hinge():
    # D: mean(relu(1 - [2, -1])) + mean(relu(1 + [0.5, -3])) = (0 + 2)/2 + (1.5 + 0)/2
    assert LOSSES["hinge"].d_loss(REAL, FAKE).item() == pytest.approx(1.75)
    # G: -mean([0.5, -3])
    assert LOSSES["hinge"].g_loss(FAKE).item() == pytest.approx(1.25)


def test_lsgan():
    # D: 0.5 * mean([1, 4]) + 0.5 * mean([0.25, 9])
    assert LOSSES["lsgan"].d_loss(REAL, FAKE).item() == pytest.approx(1.25 + 2.3125)
    # G: 0.5 * mean([0.25, 16])
    assert LOSSES["lsgan"].g_loss(FAKE).item() == pytest.approx(4.0625)


def test_wgan():
    assert LOSSES["wgan-gp"].d_loss(REAL, FAKE).item() == pytest.approx(-1.25 - 0.5)
    assert LOSSES["wgan-gp"].g_loss(FAKE).item() == pytest.approx(1.25)


def test_bce_non_saturating_and_label_smoothing():
    logit = torch.tensor([math.log(3.0)])  # sigmoid = 0.75
    # D: -log(0.75) - log(1 - 0.75) = log(4/3) + log(4)
    assert LOSSES["bce"].d_loss(logit, logit).item() == pytest.approx(math.log(4 / 3) + math.log(4))
    # G (non-saturating): -log(0.75)
    assert LOSSES["bce"].g_loss(logit).item() == pytest.approx(math.log(4 / 3))
    # one-sided smoothing 0.2: real target 0.8, fake target stays 0
    smoothed = get_loss("bce", label_smoothing=0.2)
    expected = 0.8 * math.log(4 / 3) + 0.2 * math.log(4) + math.log(4)
    assert smoothed.d_loss(logit, logit).item() == pytest.approx(expected)
    assert smoothed.g_loss(logit).item() == pytest.approx(math.log(4 / 3))


def test_get_loss_builds_what_the_config_validated():
    # names and the smoothing rule are the config's (test_config.py); get_loss only builds
    assert get_loss("hinge") is LOSSES["hinge"]
    assert [n for n, loss in LOSSES.items() if loss.accepts_label_smoothing] == ["bce"]
    with pytest.raises(TypeError):  # smoothing bound into a loss without it fails loudly, never silently
        get_loss("hinge", label_smoothing=0.1).d_loss(REAL, FAKE)


def test_gradient_penalty_linear_critic_has_grad_norm_of_a():
    # D(x) = sum(a * x): grad_x D = a everywhere, so GP = (||a|| - 1)^2 wherever x_hat falls
    a = torch.zeros(1, 2, 2)
    a[0, 0, 0], a[0, 1, 1] = 2.0, 2.0 * math.sqrt(2.0)  # ||a|| = sqrt(4 + 8) = sqrt(12)
    a.requires_grad_(True)

    def D(x, y):
        return (a * x).flatten(1).sum(1)

    real, fake = torch.rand(5, 1, 2, 2), torch.rand(5, 1, 2, 2)
    gp = gradient_penalty(D, real, fake, torch.zeros(5, dtype=torch.long), torch.Generator().manual_seed(3))
    norm = math.sqrt(12.0)
    assert gp.item() == pytest.approx((norm - 1.0) ** 2, rel=1e-5)
    # and it is differentiable w.r.t. the critic: d/da (||a|| - 1)^2 = 2 (||a|| - 1) a / ||a||
    gp.backward()
    torch.testing.assert_close(a.grad, 2 * (norm - 1.0) * a.detach() / norm)


def test_gradient_penalty_quadratic_critic_matches_autograd_by_hand():
    # D(x) = sum(x^2): grad = 2 x_hat, with x_hat from the same generator draws
    real, fake = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    y = torch.zeros(4, dtype=torch.long)
    gp = gradient_penalty(lambda x, _: x.pow(2).flatten(1).sum(1), real, fake, y, torch.Generator().manual_seed(7))
    eps = torch.rand((4, 1, 1, 1), generator=torch.Generator().manual_seed(7))
    x_hat = eps * real + (1 - eps) * fake
    expected = ((2 * x_hat).flatten(1).norm(dim=1) - 1).pow(2).mean()
    assert gp.item() == pytest.approx(expected.item(), rel=1e-5)


def test_gradient_penalty_without_generator_is_deterministic():
    real, fake = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    y = torch.zeros(3, dtype=torch.long)

    def D(x, _):
        return x.pow(3).flatten(1).sum(1)

    torch.manual_seed(1)
    first = gradient_penalty(D, real, fake, y)
    torch.manual_seed(2)  # the global RNG plays no part
    assert gradient_penalty(D, real, fake, y).item() == first.item()


def test_lecam_penalty_by_hand():
    from pipeline.losses import lecam_penalty

    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([0.0, -2.0])
    # anchors a_R = 1, a_F = -1: real terms relu(3, 1.5, 0)^2 -> (9 + 2.25 + 0) / 3; fake relu(1, 3)^2 -> (1 + 9) / 2
    assert lecam_penalty(real, fake, 1.0, -1.0).item() == pytest.approx(11.25 / 3 + 5.0)
    # logits on the right side of the other's average cost nothing
    assert lecam_penalty(torch.tensor([-2.0]), torch.tensor([3.0]), 1.0, -1.0).item() == 0.0


def test_group_spectral_penalty_by_hand():
    from pipeline.losses import group_spectral_penalty, spectral_groups

    assert [spectral_groups(f) for f in (64, 32, 48, 16, 7, 1)] == [8, 4, 6, 4, 1, 1]
    # 4 values -> 2 x 2: [[3, 0], [0, 4]] has singular values 4 and 3; [[1, 1], [1, 1]] has 2 and 0
    rows = torch.tensor([[3.0, 0.0, 0.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    assert group_spectral_penalty(rows).item() == pytest.approx((4.0 + 2.0) / 2)
    # 3 values form one 1 x 3 row: its norm
    assert group_spectral_penalty(torch.tensor([[1.0, 2.0, 2.0]])).item() == pytest.approx(3.0)
    # differentiable: a gradient step lowers it
    w = rows.clone().requires_grad_(True)
    group_spectral_penalty(w).backward()
    assert group_spectral_penalty(w.detach() - 0.1 * w.grad).item() < group_spectral_penalty(rows).item()


def test_mode_seeking_penalty_by_hand():
    from pipeline.losses import mode_seeking_penalty

    x_a, x_b = torch.zeros(2, 1, 2, 2), torch.full((2, 1, 2, 2), 0.5)
    z_a, z_b = torch.zeros(2, 3), torch.full((2, 3), 2.0)
    # mean |x_a - x_b| = 0.5 per unit of mean |z_a - z_b| = 2: ratio 0.25
    assert mode_seeking_penalty(x_a, x_b, z_a, z_b).item() == pytest.approx(1 / (0.25 + 1e-5))
    # pairs twice as far apart cost half; identical images cost 1 / eps
    assert mode_seeking_penalty(x_a, 2 * x_b, z_a, z_b).item() == pytest.approx(1 / (0.5 + 1e-5))
    assert mode_seeking_penalty(x_a, x_a, z_a, z_b).item() == pytest.approx(1e5)
    # its gradient moves the pair apart
    x = x_b.clone().requires_grad_(True)
    mode_seeking_penalty(x_a, x, z_a, z_b).backward()
    assert (x.grad < 0).all()


def test_lecam_anchors_start_at_the_first_batch_then_move_slowly():
    from pipeline.losses import LeCamAnchors

    a = LeCamAnchors(decay=0.9)
    assert a.state() is None
    a.update(torch.tensor([1.0, 3.0]), torch.tensor([-4.0]))
    assert a.state() == [2.0, -4.0]
    a.update(torch.tensor([12.0]), torch.tensor([6.0]))
    assert a.state() == pytest.approx([0.9 * 2.0 + 0.1 * 12.0, 0.9 * -4.0 + 0.1 * 6.0])
