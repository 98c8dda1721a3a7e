"""The state of one GAN training run: the `Run` a step reads and changes, and its random streams.

`pipeline.gan` builds a `Run` and steps it; `pipeline.gan_checkpoints` serialises it and restores
it; `pipeline.gan_visuals` samples its EMA generator. Every random draw comes from one of the
run's named `STREAMS` (`make_generator`), never from the global RNG.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor, nn

from pipeline import device as devices
from pipeline.config import TrainGanConfig
from pipeline.gan_tracking import Tracker
from pipeline.diffaug import AdaptiveStrength
from pipeline.losses import GanLoss, LeCamAnchors


def make_generator(seed: int, *stream: int) -> torch.Generator:
    """A CPU generator for one named random stream of run `seed` (independent streams)."""
    state = np.random.SeedSequence([seed, *stream]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


# random streams of a run, each its own generator; those a step advances are checkpointed, the
# others ("init", "fixed": weight init, grid/diversity noise) are recreated from the seed
STREAMS = {"init": 0, "sampler": 1, "noise": 2, "diffaug": 3, "gp": 4, "fixed": 5, "embed": 6, "guide": 7}


def conditioning_at(step: int, cfg: TrainGanConfig) -> float:
    """How much the class conditions G and D at update number `step` (1-based): 1 without a
    transition, else 0 until transition_start, then linear up to 1 over transition_steps."""
    if cfg.transition_steps <= 0:
        return 1.0
    return min(1.0, max(0.0, (step - cfg.transition_start) / cfg.transition_steps))


class ClassSampler:
    """Draws real batches and fake labels over the trained classes.

    With `balanced`, each class is drawn with equal probability (rare classes are trained as often
    as common ones); otherwise with its share of images. Rows within a class are uniform.
    """

    def __init__(self, labels: np.ndarray, classes: list[int], balanced: bool, generator: torch.Generator):
        order = [np.flatnonzero(labels == c) for c in classes]
        self.rows = torch.from_numpy(np.concatenate(order))
        self.counts = torch.tensor([len(o) for o in order])
        self.offsets = torch.cumsum(self.counts, 0) - self.counts
        self.classes = torch.tensor(classes)
        self.weights = torch.ones(len(classes)) if balanced else self.counts.double()
        self.generator = generator

    def labels(self, n: int, generator: torch.Generator) -> Tensor:
        """n class ids (n,) drawn from the sampling distribution with `generator`."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        return self.classes[k]

    def batch(self, n: int) -> tuple[Tensor, Tensor]:
        """(rows (n,), labels (n,)) of a real batch, drawn with the sampler's own generator."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=self.generator)
        u = torch.rand(n, generator=self.generator, dtype=torch.float64)
        within = torch.minimum((u * self.counts[k]).long(), self.counts[k] - 1)
        return self.rows[self.offsets[k] + within], self.classes[k]


@dataclasses.dataclass
class Run:
    """Everything a step reads or changes; the checkpoint is exactly this, serialised."""

    cfg: TrainGanConfig
    G: nn.Module  # raw modules (state dicts, EMA)...
    D: nn.Module
    G_ema: nn.Module
    G_train: nn.Module  # ...and what the loop calls (DDP / compiled wrappers of the same weights)
    D_train: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    loss: GanLoss
    sampler: ClassSampler
    gens: dict[str, torch.Generator]  # "noise", "diffaug", "gp", "embed" with embed_noise (the sampler holds its own)
    images: Tensor  # uint8 (N, C, H, W) on the device
    device: torch.device
    dtype: torch.dtype | None
    dist: devices.DistInfo
    step: int = 0
    history: list[list[float]] = dataclasses.field(default_factory=list)
    diversity: list[list[float]] = dataclasses.field(default_factory=list)
    judge: nn.Module | None = None  # train_gan.track_quality (rank 0): labels EMA samples
    tracker: Tracker | None = None
    real_features: dict = dataclasses.field(default_factory=dict)  # per trained class: the tracker's reference
    lecam: LeCamAnchors | None = None  # train_gan.lecam_weight > 0: the moving averages of D's logits
    ada: AdaptiveStrength | None = None  # train_gan.ada_target > 0: the augmentation probability
    guide: nn.Module | None = None  # train_gan.guide_weight > 0: the frozen real-data classifier (`gan_guide`)
