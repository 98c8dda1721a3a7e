"""The two players' objectives in one GAN step, composed from `pipeline.losses` as `train_gan` sets them.

`d_objective` is D's loss on a [real; fake] batch (before any gradient penalty), `g_objective`
G's on its fakes; `pipeline.gan.train_step` computes the logits and steps the optimisers.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from pipeline.gan_guide import guide_loss
from pipeline.gan_run import Run
from pipeline.losses import group_spectral_penalty, lecam_penalty, mode_seeking_penalty
from pipeline.models.gans import GAN_ARCHS


def pairs(t: Tensor) -> tuple[Tensor, Tensor]:
    """The two halves of a batch whose labels `pipeline.gan._noise` paired: rows i and m + i, i < B // 2."""
    b = t.shape[0]
    return t[: b // 2], t[b - b // 2:]


def class_heads(class_logits: Tensor, twin: bool) -> tuple[Tensor, Tensor | None]:
    """D's class logits (B, K), or (B, 2K) with the twin head: (the class head's, the twin's or None)."""
    if not twin:
        return class_logits, None
    head, twin_logits = class_logits.chunk(2, dim=1)
    return head, twin_logits


def d_objective(run: Run, logits: tuple[Tensor, Tensor], class_logits: Tensor | None, y: tuple[Tensor, Tensor]) -> Tensor:
    """D's objective on one [real; fake] batch, before any gradient penalty: the loss's D side,
    plus aux_weight * CE of the class head on the real half (and of the twin head on the fake
    half, with aux_twin), plus lecam_weight * LeCam."""
    (real_logits, fake_logits), (y_real, y_fake) = logits, y
    cfg = run.cfg
    d_loss = run.loss.d_loss(real_logits, fake_logits)
    if class_logits is not None:
        head, twin = class_heads(class_logits.float(), cfg.aux_twin)
        d_loss = d_loss + cfg.aux_weight * F.cross_entropy(head[: cfg.batch_size], y_real)
        if twin is not None:
            d_loss = d_loss + cfg.aux_weight * F.cross_entropy(twin[cfg.batch_size:], y_fake)
    if run.lecam is not None:
        run.lecam.update(real_logits, fake_logits)
        d_loss = d_loss + cfg.lecam_weight * lecam_penalty(real_logits, fake_logits, run.lecam.real, run.lecam.fake)
    return d_loss


def g_objective(run: Run, logits: Tensor, class_logits: Tensor | None, fakes: tuple[Tensor, Tensor, Tensor],
                strength: float, x_aug: Tensor | None = None) -> Tensor:
    """G's objective on its fakes (x, z, y): the loss's G side, plus strength * aux_weight * CE of
    D's class head on them, plus gsr_weight * gSR of G's class-conditional values, plus ms_weight *
    the mode-seeking penalty of the fakes' same-class pairs, plus strength * guide_weight * the frozen
    guide's CE (`gan_guide.guide_loss`, up to guide_until) on `x_aug` (the fakes as D saw them, after
    DiffAugment; the fakes themselves when None).

    With aux_twin (TAC-GAN, Gong et al. 2019) G also subtracts strength * aux_weight * CE of the
    twin head, which `d_objective` trains on the fakes' labels: the AC-GAN loss alone also lowers
    the conditional entropy of the class given the image, favouring a class's most typical images;
    the twin's term cancels that part.
    """
    cfg = run.cfg
    x_fake, z, y_fake = fakes
    g_loss = run.loss.g_loss(logits.float())
    if class_logits is not None:
        head, twin = class_heads(class_logits.float(), cfg.aux_twin)
        g_loss = g_loss + strength * cfg.aux_weight * F.cross_entropy(head, y_fake)
        if twin is not None:  # TAC-GAN: G also makes the twin head's job on its fakes hard
            g_loss = g_loss - strength * cfg.aux_weight * F.cross_entropy(twin, y_fake)
    if cfg.gsr_weight > 0:
        params = GAN_ARCHS[cfg.arch].class_parameters(run.G)
        g_loss = g_loss + cfg.gsr_weight * sum(group_spectral_penalty(p) for p in params)
    if cfg.ms_weight > 0:
        g_loss = g_loss + cfg.ms_weight * mode_seeking_penalty(*pairs(x_fake), *pairs(z))
    if cfg.guide_weight > 0:
        seen = x_fake if x_aug is None else x_aug
        g_loss = g_loss + strength * cfg.guide_weight * guide_loss(run.guide, seen, y_fake, cfg.guide_until)
    return g_loss
