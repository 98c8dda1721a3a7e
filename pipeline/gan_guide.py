"""The guide: a frozen real-data classifier whose verdict on G's samples G also learns from.

With `train_gan.guide_weight = g > 0`, a small CNN is trained once on the GAN's training images
before the GAN (`judge.JUDGES["guide"]`: class-weighted, with classic augmentation), frozen, and G
also minimises g * CE(guide(aug(G(z, y))), y). D's class head (aux_weight) learns the classes
while the GAN trains and is weak for thousands of steps; the guide knows them from step 1, which
matters where classes differ in small details (the digits on a speed-limit sign). The fakes reach
the guide through the same DiffAugment as D sees them, so G cannot win on pixel patterns that one
fixed view of the classifier happens to read as a class.

The guide is trained with its own seed (stream "guide"), apart from the tracking judge's, and
cached in guide.pt for what it is trained from (`judge.judge_key`: the images, seed, epochs and
device): a resumed run learns from exactly the same guide, and a run with other GAN params reuses it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.config import EvaluateConfig
from pipeline.data import ImageTable
from pipeline.gan_run import STREAMS, make_generator
from pipeline.judge import cached_judge, fit_judge, judge_key

log = logging.getLogger("augment")

GUIDE_FILE = "guide.pt"


def guide_seed(gan_seed: int) -> int:
    """The guide's training seed: from the run's "guide" random stream (`gan_run.STREAMS`), so it
    differs from the tracking judge's (which uses the run seed)."""
    return int(make_generator(gan_seed, STREAMS["guide"]).initial_seed() % (2**31 - 1))


def load_or_train_guide(train: ImageTable, epochs: int, seed: int, device: torch.device, out_dir: Path) -> nn.Module:
    """The frozen guide of this run: out_dir/guide.pt when it was trained from the same images,
    epochs, seed and device (`judge_key`), else trained on `train` and saved there. Eval mode, no
    gradients, on `device`."""

    def fit() -> nn.Module:
        log.info("training the guide on %d real images (%d epochs; train_gan.guide_weight > 0)", len(train), epochs)
        empty = ImageTable(train.images[:0], train.labels[:0], train.class_names)
        base = EvaluateConfig(gan_quality=False, device=device.type, cpu_threads=torch.get_num_threads())
        return fit_judge("guide", train, empty, base, seed, epochs=epochs, progress=True)

    # loaded or fresh, the same logits bit for bit (`cached_judge`): a resumed run learns from the same guide
    guide = cached_judge(out_dir / GUIDE_FILE, judge_key("guide", train, seed, epochs, device.type), train, fit)
    return guide.to(device).eval().requires_grad_(False)


def guide_loss(guide: nn.Module, x_aug: Tensor, y: Tensor, until: float = 1.0) -> Tensor:
    """Mean over the (augmented) fakes of max(0, CE - (-log until)): the guide's cross-entropy against
    the intended labels, zero for a sample the guide already gives its class probability >= `until`.

    At until = 1 it is the plain cross-entropy, which keeps rewarding a class's most confidently
    classified image; measured on GTSRB that pulled every sample of a class to one image. Below 1 the
    guide pushes a sample only until it is recognisable, and D and the noise decide the rest.
    """
    ce = F.cross_entropy(guide(x_aug).float(), y, reduction="none")
    return torch.clamp(ce + math.log(until), min=0.0).mean()
