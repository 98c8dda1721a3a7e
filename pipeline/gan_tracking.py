"""Sample quality tracked during GAN training, and early stopping where it stops improving.

With `train_gan.track_quality`, a judge (a class-weighted small CNN trained once on the GAN's own
training images, with classic augmentation) labels a fixed set of EMA samples every
`sample_every` steps. Its agreement with the intended class, per class, goes to quality.csv.
With `train_gan.early_stop_patience = k > 0`, training stops after k evaluations without a
better score and final.pt holds the EMA weights of the best evaluation. The score is the worst
trained class's agreement, ties broken by the mean: a GAN whose rare class is unusable is not
improved by better common classes.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.config import EvaluateConfig
from pipeline.data import ImageTable
from pipeline.judge import cached_judge, fit_judge

log = logging.getLogger("augment")

QUALITY_SAMPLES = 100  # fixed EMA samples per trained class at each evaluation
QUALITY_COLUMNS = ("step", "class", "agreement")


def train_judge(train: ImageTable, epochs: int, seed: int, device: str, out_dir: Path, fingerprint: str) -> nn.Module:
    """The judge for this run (`judge.JUDGES["tracking"]`): loaded from out_dir/judge.pt when it was
    trained for the same fingerprint (a resumed run must score exactly as before), trained and saved
    otherwise."""

    def fit() -> nn.Module:
        log.info("training the quality judge on %d real images (%d epochs)", len(train), epochs)
        empty = ImageTable(train.images[:0], train.labels[:0], train.class_names)
        base = EvaluateConfig(gan_quality=False, device=device, cpu_threads=torch.get_num_threads())
        return fit_judge("tracking", train, empty, base, seed, epochs=epochs, progress=True)

    return cached_judge(out_dir / "judge.pt", fingerprint, train, fit).to(device)


@torch.no_grad()
def agreement(judge: nn.Module, images: torch.Tensor, labels: torch.Tensor, classes: list[int]) -> list[float]:
    """Fraction of `images` (float (N, C, H, W) in [-1, 1], quantised as stored) that the judge
    labels as their intended class, per class of `classes` (in that order)."""
    device = next(judge.parameters()).device
    x = ((images + 1.0) * 127.5).round().clamp(0, 255) / 127.5 - 1.0  # what a saved PNG would hold
    pred = torch.cat([judge(x[i : i + 512].to(device)).argmax(1).cpu() for i in range(0, len(x), 512)])
    return [float((pred[labels == c] == c).float().mean()) for c in classes]


@dataclasses.dataclass
class Tracker:
    """The best evaluation so far and how many evaluations since it; saved in every checkpoint."""

    patience: int
    best_step: int = -1
    best_score: tuple[float, float] = (-1.0, -1.0)  # (worst class, mean)
    best_state: dict | None = None
    since_best: int = 0
    rows: list[list[float]] = dataclasses.field(default_factory=list)

    def update(self, step: int, per_class: list[float], classes: list[int], G_ema: nn.Module) -> None:
        """Record one evaluation of the EMA generator."""
        self.rows += [[float(step), float(c), a] for c, a in zip(classes, per_class)]
        score = (min(per_class), float(np.mean(per_class)))
        if score > self.best_score:
            self.best_step, self.best_score, self.since_best = step, score, 0
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in G_ema.state_dict().items()})
        else:
            self.since_best += 1

    @property
    def exhausted(self) -> bool:
        """True when early stopping is on and `patience` evaluations have passed without a better one."""
        return self.patience > 0 and self.since_best >= self.patience

    def state(self) -> dict:
        return {"patience": self.patience, "best_step": self.best_step, "best_score": list(self.best_score),
                "best_state": self.best_state, "since_best": self.since_best,
                "rows": torch.tensor(self.rows, dtype=torch.float64)}

    @classmethod
    def restore(cls, s: dict) -> "Tracker":
        return cls(int(s["patience"]), int(s["best_step"]), tuple(float(v) for v in s["best_score"]),
                   s["best_state"], int(s["since_best"]), s["rows"].tolist())
