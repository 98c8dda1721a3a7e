"""Sample quality tracked during GAN training, and early stopping where it stops improving.

With `train_gan.track_quality`, a judge (a class-weighted small CNN trained once on the GAN's own
training images, with classic augmentation) looks at a fixed set of EMA samples every
`sample_every` steps. Per class, quality.csv gets its agreement with the intended class
(consistency) and the recall of the class's real images in the judge's feature space (the share of
real images inside the k-NN manifold of the samples, Kynkäänniemi et al. 2019): a class whose
samples all look alike has a low recall however consistent they are.
With `train_gan.early_stop_patience = k > 0`, training stops after k evaluations without a
better score and final.pt holds the EMA weights of the best evaluation. The score of a class is
sqrt(agreement x recall), and the run's is the worst trained class's, ties broken by the mean: a
GAN whose rare class is unusable (wrong or collapsed) is not improved by better common classes.
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
from pipeline.judge import cached_judge, fit_judge, judge_key
from pipeline.feature_distances import coverage_fraction
from pipeline.pixels import from_uint8, to_float, to_uint8

log = logging.getLogger("augment")

QUALITY_SAMPLES = 100  # fixed EMA samples per trained class at each evaluation
QUALITY_COLUMNS = ("step", "class", "agreement", "recall")
REAL_PER_CLASS = 200  # real training images per class whose recall is measured (all when fewer)
RECALL_K = 3  # neighbours of the samples' manifold (as feature_distances.precision_recall)


def train_judge(train: ImageTable, epochs: int, seed: int, device: str, out_dir: Path) -> nn.Module:
    """The judge for this run (`judge.JUDGES["tracking"]`): loaded from out_dir/judge.pt when it was
    trained from the same images, epochs, seed and device (`judge_key`: a resumed run must score
    exactly as before, and a run with other GAN params reuses it), trained and saved otherwise."""

    def fit() -> nn.Module:
        log.info("training the quality judge on %d real images (%d epochs)", len(train), epochs)
        empty = ImageTable(train.images[:0], train.labels[:0], train.class_names)
        base = EvaluateConfig(gan_quality=False, device=device, cpu_threads=torch.get_num_threads())
        return fit_judge("tracking", train, empty, base, seed, epochs=epochs, progress=True)

    return cached_judge(out_dir / "judge.pt", judge_key("tracking", train, seed, epochs, device), train, fit).to(device)


@torch.no_grad()
def _embed(judge: nn.Module, x: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """(features float64 (N, D), predicted labels (N,)) of float images in [-1, 1]."""
    device = next(judge.parameters()).device
    feats = [judge.features(x[i : i + 512].to(device)).cpu() for i in range(0, len(x), 512)]
    f = torch.cat(feats) if feats else torch.zeros(0)
    return f.double().numpy(), judge.head(f.to(device)).argmax(1).cpu()


def real_features(judge: nn.Module, train: ImageTable, classes: list[int], seed: int) -> dict[int, np.ndarray]:
    """The judge's features of up to REAL_PER_CLASS real training images of each class (a fixed
    subset per seed): the reference each evaluation's per-class recall is measured against."""
    rng = np.random.default_rng(seed)
    out = {}
    for c in classes:
        idx = np.flatnonzero(train.labels == c)
        if len(idx) > REAL_PER_CLASS:
            idx = np.sort(rng.choice(idx, REAL_PER_CLASS, replace=False))
        out[c] = _embed(judge, to_float(train.images[idx]))[0]
    return out


def assess(judge: nn.Module, images: torch.Tensor, labels: torch.Tensor, classes: list[int],
           real: dict[int, np.ndarray]) -> tuple[list[float], list[float]]:
    """Per class of `classes` (in that order): the fraction of `images` (float (N, C, H, W) in
    [-1, 1], quantised as stored) the judge labels as their intended class, and the recall of that
    class's real features (`real_features`) inside the samples' k-NN manifold."""
    feats, pred = _embed(judge, from_uint8(to_uint8(images)))  # as a saved PNG would hold them
    agree, recall = [], []
    for c in classes:
        mine = (labels == c).numpy()
        agree.append(float((pred[mine] == c).float().mean()))
        k = min(RECALL_K, int(mine.sum()) - 1)
        recall.append(coverage_fraction(real[c], feats[mine], k) if k >= 1 and len(real[c]) else float("nan"))
    return agree, recall


def class_scores(agreement: list[float], recall: list[float]) -> list[float]:
    """sqrt(agreement x recall) per class: high only when a class is both recognisable and diverse."""
    return [float(np.sqrt(a * r)) if np.isfinite(r) else a for a, r in zip(agreement, recall)]


@dataclasses.dataclass
class Tracker:
    """The best evaluation so far and how many evaluations since it; saved in every checkpoint."""

    patience: int
    best_step: int = -1
    best_score: tuple[float, float] = (-1.0, -1.0)  # (worst class, mean) of class_scores
    best_state: dict | None = None
    since_best: int = 0
    rows: list[list[float]] = dataclasses.field(default_factory=list)

    def update(self, step: int, agreement: list[float], recall: list[float], classes: list[int],
               G_ema: nn.Module, eligible: bool = True) -> None:
        """Record one evaluation of the EMA generator (`assess`'s two lists, per class of `classes`).
        An evaluation that is not `eligible` (a generator still partly unconditional, whose
        weights would not sample the same once loaded) is recorded but never becomes the best."""
        self.rows += [[float(step), float(c), a, r] for c, a, r in zip(classes, agreement, recall)]
        if not eligible:
            return
        per_class = class_scores(agreement, recall)
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
                   s["best_state"], int(s["since_best"]),
                   [r + [float("nan")] * (len(QUALITY_COLUMNS) - len(r)) for r in s["rows"].tolist()])  # 0.4.0: no recall
