"""GAN objectives, one registry keyed by the names params.yaml uses (`train_gan.loss`).

`LOSSES[name]` is a `GanLoss` with `d_loss(real_logits, fake_logits)` and `g_loss(fake_logits)`,
both returning a scalar to minimise; `gradient_penalty` is the WGAN-GP term that `train_gan`
adds to the critic's loss when `loss.gradient_penalty` is set, `lecam_penalty` the LeCam term
it adds with `train_gan.lecam_weight` > 0 (with any loss), and `group_spectral_penalty` the gSR term
it adds to the generator's loss with `train_gan.gsr_weight` > 0. `pipeline.config` checks names and
label smoothing against this registry at load time; `pipeline.gan` builds the loss once (`get_loss`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclasses.dataclass(frozen=True)
class GanLoss:
    """A discriminator objective and its generator counterpart.

    Attributes:
        name: registry key.
        d_loss: (real_logits (B,), fake_logits (B,)) -> scalar the discriminator minimises.
        g_loss: fake_logits (B,) -> scalar the generator minimises.
        gradient_penalty: whether the recipe adds `gp_weight * gradient_penalty(...)` to d_loss.
        accepts_label_smoothing: whether d_loss takes `label_smoothing` (one-sided, real targets).
    """

    name: str
    d_loss: Callable[[Tensor, Tensor], Tensor]
    g_loss: Callable[[Tensor], Tensor]
    gradient_penalty: bool = False
    accepts_label_smoothing: bool = False


def bce_d_loss(real: Tensor, fake: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Non-saturating GAN, D side, with one-sided label smoothing s (real target 1 - s).

    min_D  -E[(1-s) log D(x) + s log(1 - D(x))] - E[log(1 - D(G(z)))],  D = sigmoid(logit);
    with -log sigmoid(l) = softplus(-l) and -log(1 - sigmoid(l)) = softplus(l).
    """
    t = 1.0 - label_smoothing
    real_term = t * F.softplus(-real) + (1.0 - t) * F.softplus(real)
    return real_term.mean() + F.softplus(fake).mean()


def bce_g_loss(fake: Tensor) -> Tensor:
    """Non-saturating GAN, G side: min_G -E[log D(G(z))] = E[softplus(-logit)]."""
    return F.softplus(-fake).mean()


def hinge_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    """Hinge, D side: min_D E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def hinge_g_loss(fake: Tensor) -> Tensor:
    """Hinge, G side: min_G -E[D(G(z))]."""
    return -fake.mean()


def lsgan_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    """Least squares (a=0, b=1), D side: min_D 1/2 E[(D(x) - 1)^2] + 1/2 E[D(G(z))^2]."""
    return 0.5 * (real - 1.0).pow(2).mean() + 0.5 * fake.pow(2).mean()


def lsgan_g_loss(fake: Tensor) -> Tensor:
    """Least squares (c=1), G side: min_G 1/2 E[(D(G(z)) - 1)^2]."""
    return 0.5 * (fake - 1.0).pow(2).mean()


def wgan_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    """Wasserstein critic: min_D E[D(G(z))] - E[D(x)] (+ gp_weight * gradient penalty)."""
    return fake.mean() - real.mean()


def wgan_g_loss(fake: Tensor) -> Tensor:
    """Wasserstein generator: min_G -E[D(G(z))]."""
    return -fake.mean()


LOSSES: dict[str, GanLoss] = {
    "bce": GanLoss("bce", bce_d_loss, bce_g_loss, accepts_label_smoothing=True),
    "hinge": GanLoss("hinge", hinge_d_loss, hinge_g_loss),
    "lsgan": GanLoss("lsgan", lsgan_d_loss, lsgan_g_loss),
    "wgan-gp": GanLoss("wgan-gp", wgan_d_loss, wgan_g_loss, gradient_penalty=True),
}


def get_loss(name: str, label_smoothing: float = 0.0) -> GanLoss:
    """`LOSSES[name]`, with `label_smoothing` > 0 bound into its D loss.

    The name and the smoothing are those of a validated `TrainGanConfig`: `pipeline.config` owns
    the rules (a known name; smoothing only where `accepts_label_smoothing`).
    """
    loss = LOSSES[name]
    if label_smoothing == 0.0:
        return loss
    return dataclasses.replace(loss, d_loss=functools.partial(loss.d_loss, label_smoothing=label_smoothing))


def lecam_penalty(real: Tensor, fake: Tensor, anchor_real: float, anchor_fake: float) -> Tensor:
    """LeCam regularisation (Tseng et al. 2021) of D's logits towards the other side's moving average.

    R = E[relu(D(x) - a_F)^2] + E[relu(a_R - D(G(z)))^2], with a_R, a_F the exponential moving
    averages of D's mean real and fake logits (`LeCamAnchors`): a real logit is only pulled down
    while it is above the fakes' average, a fake one only up while below the reals'. Keeping D's
    outputs near each other bounds how sharply it can separate a few real images (overfitting
    with limited data) and restrains the LeCam divergence between the two distributions.
    """
    return F.relu(real - anchor_fake).pow(2).mean() + F.relu(anchor_real - fake).pow(2).mean()


def spectral_groups(features: int) -> int:
    """Rows of the matrix one class's F conditional values are grouped into for `group_spectral_penalty`:
    the largest divisor of F that is <= sqrt(F) (64 -> 8 x 8, 32 -> 4 x 8, 48 -> 6 x 8, 7 -> 1 x 7)."""
    return max(d for d in range(1, int(features ** 0.5) + 1) if features % d == 0)


def group_spectral_penalty(rows: Tensor) -> Tensor:
    """Group spectral regularisation (gSR, Rangwani et al. 2022) of class-conditional parameters.

    rows: (K, F), one class's conditional BatchNorm gains (less 1) or biases per row. Each row is
    grouped into a g x F/g matrix (`spectral_groups`) and the penalty is the classes' mean largest
    singular value of it. The paper links class-specific mode collapse on long-tailed data to
    these norms exploding for the tail classes; keeping them small keeps a tail class's
    generator close to what the classes share.
    """
    k, f = rows.shape
    g = spectral_groups(f)
    return torch.linalg.matrix_norm(rows.float().reshape(k, g, f // g), ord=2).mean()


def mode_seeking_penalty(x_a: Tensor, x_b: Tensor, z_a: Tensor, z_b: Tensor, eps: float = 1e-5) -> Tensor:
    """Mode-seeking regularisation (MSGAN, Mao et al. 2019) of G, for pairs of samples of one class.

    x_a[i], x_b[i]: two images G made for the same class from the noises z_a[i], z_b[i]. With
    r = mean|x_a - x_b| / mean|z_a - z_b| (the images' distance per unit of noise distance), the
    penalty is 1 / (r + eps): G lowers it by spreading the samples of a class apart, which a
    generator collapsing a class onto a few images does not.
    """
    ratio = (x_a.float() - x_b.float()).abs().mean() / (z_a.float() - z_b.float()).abs().mean()
    return 1.0 / (ratio + eps)


@dataclasses.dataclass
class LeCamAnchors:
    """The moving averages a_R, a_F of `lecam_penalty`: the first update sets them to the batch's
    means, later ones blend a_ <- decay * a_ + (1 - decay) * mean."""

    decay: float
    real: float | None = None
    fake: float | None = None

    def update(self, real: Tensor, fake: Tensor) -> None:
        r, f = float(real.detach().float().mean()), float(fake.detach().float().mean())
        if self.real is None or self.fake is None:
            self.real, self.fake = r, f
        else:
            self.real = self.decay * self.real + (1.0 - self.decay) * r
            self.fake = self.decay * self.fake + (1.0 - self.decay) * f

    def state(self) -> list[float] | None:
        return None if self.real is None else [self.real, self.fake]


def gradient_penalty(
    D: Callable[[Tensor, Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    y: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """WGAN-GP term E[(||grad_x D(x_hat, y)||_2 - 1)^2] on x_hat = eps*real + (1-eps)*fake.

    Args:
        D: the critic, (x (B,C,H,W), y (B,)) -> logits (B,).
        real: real images (B, C, H, W).
        fake: generated images, same shape (detached or not; only x_hat is differentiated).
        y: labels (B,) shared by the pair.
        generator: CPU generator for eps ~ U(0, 1) per sample; None uses a fresh one seeded 0,
            so the result never depends on the global RNG.

    Returns:
        Scalar tensor, differentiable w.r.t. D's parameters (create_graph=True).
    """
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    b = real.shape[0]
    eps = torch.rand((b,) + (1,) * (real.dim() - 1), generator=generator).to(real.device, real.dtype)
    x_hat = (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)
    out = D(x_hat, y)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    norms = grad.float().flatten(1).norm(2, dim=1)
    return (norms - 1.0).pow(2).mean()
