"""The one downstream-classifier trainer, used by every strategy, the mixing-policy search and the
real-data judges (`pipeline.judge`): `train_classifier(TrainingSet(rows, ...), val, cfg, seed)`.

Every run takes the same number of optimiser steps for the same real training set (epochs of the
real set, `evaluate.min_steps`), whatever a strategy adds, so a strategy that enlarges the set is
not also the one trained longest. A `TrainingSet` holds the rows and their loss weights, a
`Recipe` says how the loss and the batches are formed (logit adjustment, class weights from the
start or deferred, class-balanced batches, mixup, classifier re-training) and a `SyntheticUse` how
a synthetic pool joins (when, how many per epoch, with what weight); all three live in
`pipeline.classifier_recipe`.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import metrics as M
from pipeline.classifier_recipe import (
    Recipe, TrainingSet, effective_number_weights, inverse_frequency_weights, logit_prior,
)
from pipeline.config import EvaluateConfig
from pipeline.data import ImageTable
from pipeline.device import autocast, choose_precision, prepare_module, select_device, to_device_images
from pipeline.errors import ConfigError, DataError, TrainingError
from pipeline.models.classifiers import build_classifier, label_probability
from pipeline.pixels import to_float
from pipeline.pool import PoolDraw
from pipeline.progress import tqdm
from pipeline.threads import cpu_threads

# ---- helpers shared with the callers ------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """`pipeline.device.select_device` for `evaluate.device`; errors name that key."""
    try:
        return select_device(name)
    except ConfigError as e:
        raise ConfigError(f"evaluate.{e}") from None


def augment_batch(x: torch.Tensor, generator: torch.Generator, degrees: float = 10.0,
                  scale: float = 0.1, shift: float = 0.1) -> torch.Tensor:
    """Random affine per image: rotation +-degrees, zoom 1 +- scale, shift +- shift of the side.

    No flips: they change the meaning of digits and traffic signs. Border pixels are repeated.
    """
    b = x.shape[0]
    u = (torch.rand(4, b, generator=generator) * 2 - 1).to(x.device)  # (4, B) in [-1, 1]
    angle, zoom = u[0] * math.radians(degrees), 1 + u[1] * scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # affine_grid works in [-1, 1] coordinates: a shift of f of the side is 2f
    theta = torch.stack([torch.stack([cos, -sin, 2 * shift * u[2]], 1), torch.stack([sin, cos, 2 * shift * u[3]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


@torch.no_grad()
def logits(model: nn.Module, images: np.ndarray, batch_size: int = 512) -> torch.Tensor:
    """Class logits float32 (N, K) on the CPU for uint8 NHWC images, in eval mode, in batches."""
    model.eval()
    device = next(model.parameters()).device
    out = [model(to_device_images(to_float(images[i : i + batch_size]), device)).float().cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, 0)


def predict(model: nn.Module, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Predicted labels int64 (N,) for uint8 NHWC images, in eval mode."""
    if len(images) == 0:
        return np.zeros(0, np.int64)
    return logits(model, images, batch_size).argmax(1).numpy().astype(np.int64)


def intended_class_probability(model: nn.Module, table: ImageTable, batch_size: int = 512) -> np.ndarray:
    """p(label_i | image_i) float32 (N,) under `model` for every row of `table`."""
    if len(table) == 0:
        return np.zeros(0, np.float32)
    p = label_probability(logits(model, table.images, batch_size), torch.from_numpy(table.labels))
    return p.numpy().astype(np.float32)


def _val_score(model: nn.Module, val: ImageTable) -> float:
    if len(val) == 0:
        return 0.0
    return M.balanced_accuracy(M.confusion_matrix(val.labels, predict(model, val.images), val.num_classes))


def validation_scores(model: nn.Module, val: ImageTable) -> tuple[float, float]:
    """(balanced accuracy, class-balanced NLL) of `model` on the validation images, one forward pass."""
    if len(val) == 0:
        return 0.0, float("nan")
    z = logits(model, val.images)
    cm = M.confusion_matrix(val.labels, z.argmax(1).numpy().astype(np.int64), val.num_classes)
    p = label_probability(z, torch.from_numpy(val.labels)).numpy()
    return M.balanced_accuracy(cm), M.balanced_log_loss(val.labels, p)


def _trains(batch: int, n: int) -> bool:
    """Whether a batch of `batch` images from a set of `n` takes an optimiser step: a batch of one
    is skipped when the set has more than two (it breaks BatchNorm on 1x1 feature maps)."""
    return batch >= 2 or n <= 2


def steps_per_epoch(n: int, batch: int) -> int:
    """Optimiser steps in one pass over `n` images in batches of `batch` (see `_trains`)."""
    full, rest = divmod(n, batch)
    return full * _trains(batch, n) + int(rest > 0 and _trains(rest, n))


def epochs_for(n: int, cfg: EvaluateConfig) -> int:
    """`cfg.epochs`, raised until the epochs add up to at least `cfg.min_steps` optimiser steps."""
    return max(cfg.epochs, math.ceil(cfg.min_steps / max(1, steps_per_epoch(n, cfg.batch_size))))


# ---- the training loop ------------------------------------------------------------------------


def train_classifier(ts: TrainingSet, val: ImageTable, cfg: EvaluateConfig, seed: int, *,
                     steps_from: int | None = None, progress: bool = True) -> nn.Module:
    """Train `cfg.classifier` on `ts` (its rows, weights and synthetic pool) under its recipe; return
    it at the epoch with the best validation balanced accuracy (the last on ties or without
    validation images; with a late phase, among the late phase's epochs only), in eval mode.

    Args:
        ts: the training rows (a strategy's real rows: oversampled, SMOTEd or as they are), their
            per-row (`sample_weight`, (N,)) and per-class (`class_weight`, (K,); the loss is
            sum(w_i * CE_i) / sum(w_i)) loss weights, the recipe (default: plain cross-entropy on
            instance batches; `augment` turns on `augment_batch`) and a synthetic pool.
        val: real validation images; the only data used to choose the model.
        cfg: classifier, epochs, min_steps, batch_size, lr, lr_schedule, device, precision.
        seed: seeds the weights, the batches, the augmentation and the synthetic draws.
        steps_from: the number of rows the step budget is computed from (default len(ts.table)); a
            strategy that duplicates rows passes the real count, so every strategy takes the same
            optimiser steps.
        progress: show a bar over epochs.

    Runs with `cfg.cpu_threads` torch threads, restored afterwards.
    """
    train, sample_weight, class_weight, synthetic = ts.table, ts.sample_weight, ts.class_weight, ts.synthetic
    if len(train) == 0:
        raise DataError("no training images for the classifier")
    if sample_weight is not None and len(sample_weight) != len(train):
        raise ValueError(f"sample_weight has {len(sample_weight)} values for {len(train)} training images")
    if class_weight is not None and len(class_weight) != train.num_classes:
        raise ValueError(f"class_weight has {len(class_weight)} values for {train.num_classes} classes")
    if synthetic is not None and len(synthetic.weight) != len(synthetic.pool):
        raise ValueError(f"synthetic weight has {len(synthetic.weight)} values for {len(synthetic.pool)} images")
    recipe = ts.recipe or Recipe()
    if ts.augment and not recipe.augment:
        recipe = Recipe(**{**recipe.__dict__, "augment": True})
    with cpu_threads(cfg.cpu_threads):
        return _Run(dataclasses.replace(ts, recipe=recipe), val, cfg, seed, steps_from or len(train)).fit(progress)


class _Run:
    """One classifier's training: the rows, their weights, the phases and the loop."""

    def __init__(self, ts: TrainingSet, val: ImageTable, cfg: EvaluateConfig, seed: int, steps_from: int) -> None:
        """`ts.recipe` must be set (`train_classifier` fills in the default)."""
        train, sample_weight, class_weight = ts.table, ts.sample_weight, ts.class_weight
        recipe, synthetic = ts.recipe, ts.synthetic
        self.cfg, self.val, self.recipe, self.synthetic = cfg, val, recipe, synthetic
        self.device = resolve_device(cfg.device)
        self.g = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)  # mixup's lambdas and the synthetic draws
        self.k, self.n_real = train.num_classes, len(train)
        h, w, c = train.image_shape
        # channels_last: oneDNN's CPU convolutions train small_cnn faster than with NCHW (a probe on
        # the 2-core AVX2 EPYC, batch 32: 1.36x; 1.17x with augmentation), and CUDA's tensor cores too
        self.model = prepare_module(build_classifier(cfg.classifier, (c, h, w), self.k, self.g), self.device)
        pool = synthetic.pool if synthetic is not None else None
        images = train.images if pool is None or not len(pool) else np.concatenate([train.images, pool.images])
        labels = train.labels if pool is None or not len(pool) else np.concatenate([train.labels, pool.labels])
        weight = np.ones(len(train), np.float32)
        if sample_weight is not None:
            weight *= np.asarray(sample_weight, np.float32)
        if class_weight is not None:
            weight *= np.asarray(class_weight, np.float32)[train.labels]
        if pool is not None:
            weight = np.concatenate([weight, np.asarray(synthetic.weight, np.float32)])
        self.labels_np, self.weight_np = labels, weight
        self.x, self.y = to_float(images).to(self.device), torch.from_numpy(labels).to(self.device)
        self.dtype = choose_precision(cfg.precision, self.device)  # bf16 autocast of the forward only
        self.epochs = epochs_for(steps_from, cfg)
        self.steps = steps_per_epoch(steps_from, cfg.batch_size)
        late = max(1, round(recipe.late_fraction * self.epochs)) if recipe.has_late_phase else 0
        self.late_start = self.epochs - min(late, self.epochs)
        self._pool = PoolDraw(pool.labels, self.rng) if pool is not None else None

    # -- which rows an epoch trains on ----------------------------------------------------------

    def _synthetic_on(self, late: bool) -> bool:
        s = self.synthetic
        if s is None or not len(s.pool):
            return False
        return s.phase == "all" or (late and s.phase == "late") or (late and s.phase == "head" and self.recipe.retrain_head)

    def epoch_rows(self, late: bool) -> np.ndarray:
        """Row indices (into real then pool rows) of one epoch's training set."""
        rows = np.arange(self.n_real)
        if not self._synthetic_on(late):
            return rows
        s = self.synthetic
        if s.per_epoch is None:
            extra = np.arange(len(s.pool))
        elif s.candidates > 1:
            tried = self._pool.epoch(np.minimum(s.per_epoch * s.candidates, s.pool.counts()))
            extra = self.hardest(tried, s.per_epoch)
        else:
            extra = self._pool.epoch(s.per_epoch)
        return np.concatenate([rows, self.n_real + extra]).astype(np.int64)

    def hardest(self, tried: np.ndarray, per_epoch: np.ndarray) -> np.ndarray:
        """Sorted pool rows: of `tried` (pool row indices), the per_epoch[c] of each class c the
        model gives the lowest probability of their class (ties: the earlier row)."""
        p = torch.empty(len(tried))
        self.model.eval()
        with torch.no_grad(), autocast(self.device, self.dtype):
            for a in range(0, len(tried), 512):
                idx = torch.from_numpy(self.n_real + tried[a:a + 512]).to(self.device)
                xb = self.x[idx].contiguous(memory_format=torch.channels_last)
                p[a:a + 512] = label_probability(self.model(xb).float(), self.y[idx]).cpu()
        labels = self.labels_np[self.n_real + tried]
        keep = [tried[labels == c][np.argsort(p.numpy()[labels == c], kind="stable")[:n]]
                for c, n in enumerate(per_epoch) if n > 0]
        return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)

    def class_mass(self, rows: np.ndarray, balanced: bool, weight: np.ndarray) -> np.ndarray:
        """Expected loss weight per class in a batch drawn from `rows` (up to a constant)."""
        labels = self.labels_np[rows]
        mass = np.bincount(labels, weights=weight[rows], minlength=self.k)
        if balanced:  # each present class equally likely, rows uniform within it: mean weight per class
            counts = np.bincount(labels, minlength=self.k)
            mass = np.where(counts > 0, mass / np.maximum(counts, 1), 0.0)
        return mass

    def batches(self, rows: np.ndarray, balanced: bool) -> list[torch.Tensor]:
        """`self.steps` batches of row indices from `rows`: successive permutations (instance), or
        class-balanced draws with replacement."""
        b = self.cfg.batch_size
        if balanced:
            labels = self.labels_np[rows]
            present = np.flatnonzero(np.bincount(labels, minlength=self.k))
            by_class = [torch.from_numpy(rows[labels == c]) for c in present]
            pick = torch.randint(len(present), (self.steps * b,), generator=self.g)
            out = torch.empty(self.steps * b, dtype=torch.int64)
            for j, members in enumerate(by_class):
                where = pick == j
                out[where] = members[torch.randint(len(members), (int(where.sum()),), generator=self.g)]
            return list(out.split(b))
        chunks: list[torch.Tensor] = []
        while len(chunks) < self.steps:
            order = torch.from_numpy(rows)[torch.randperm(len(rows), generator=self.g)]
            chunks += [c for c in order.split(b) if _trains(len(c), len(rows))]
        return chunks[: self.steps]

    # -- the loop ---------------------------------------------------------------------------------

    def _prior_rows(self, rows: np.ndarray) -> np.ndarray:
        """The rows whose classes the re-balancing counts (`Recipe.prior`): all, or the real ones."""
        return rows[rows < self.n_real] if self.recipe.prior == "real" else rows

    def _phase_weight(self, rows: np.ndarray, late: bool) -> np.ndarray:
        weight = self.weight_np.copy()
        r = self.recipe
        counted = self._prior_rows(rows)
        counts = np.bincount(self.labels_np[counted], weights=weight[counted], minlength=self.k)
        if r.class_weight == "inverse":
            weight *= inverse_frequency_weights(counts)[self.labels_np].astype(np.float32)
        elif r.class_weight == "deferred" and late:
            weight *= effective_number_weights(counts, r.drw_beta)[self.labels_np].astype(np.float32)
        return weight

    def _optimizer(self, params, total_steps: int):
        opt = torch.optim.Adam(params, lr=self.cfg.lr)
        schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps))
                    if self.cfg.lr_schedule == "cosine" else None)
        return opt, schedule

    def _start_head_phase(self):
        """Freeze the body (BatchNorm statistics too) and give the head a fresh optimiser. The head
        goes on from its first-phase weights: re-drawing it, as cRT does, left too few steps to
        train it here (on the demo digits, 3 seeds: 83.9% balanced test accuracy re-drawn, 95.9%
        continued, 93.9% without the phase)."""
        model = self.model
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.head.parameters():
            p.requires_grad_(True)
        return self._optimizer(list(model.head.parameters()), (self.epochs - self.late_start) * self.steps)

    def fit(self, progress: bool) -> nn.Module:
        r, model = self.recipe, self.model
        opt, schedule = self._optimizer(model.parameters(), self.epochs * self.steps)
        best_score, best_state = -1.0, None
        for epoch in tqdm(range(self.epochs), desc="classifier", disable=not progress, leave=False):
            late = epoch >= self.late_start and r.has_late_phase
            head_only = late and r.retrain_head
            if head_only and epoch == self.late_start:
                opt, schedule = self._start_head_phase()
            rows = self.epoch_rows(late)
            balanced = r.sampling == "class_balanced" or head_only
            weight_np = self._phase_weight(rows, late)
            weight = torch.from_numpy(weight_np).to(self.device)
            offsets = None
            if r.loss == "logit_adjusted":
                prior = logit_prior(self.class_mass(self._prior_rows(rows), balanced, weight_np))
                offsets = (r.tau * torch.as_tensor(prior, dtype=torch.float32)).to(self.device)
            model.train()
            if head_only:
                model.body.eval()
            for idx in self.batches(rows, balanced):
                self._step(idx.to(self.device), weight, offsets, opt, epoch, mixup=r.mixup_alpha > 0 and not head_only)
                if schedule is not None:
                    schedule.step()
            if epoch >= (self.late_start if r.has_late_phase else 0):
                score = _val_score(model, self.val)
                if score >= best_score:
                    best_score, best_state = score, copy.deepcopy(model.state_dict())
        model.load_state_dict(best_state)
        for p in model.parameters():
            p.requires_grad_(True)
        return model.eval()

    def _step(self, idx: torch.Tensor, weight: torch.Tensor, offsets: torch.Tensor | None, opt,
              epoch: int, mixup: bool) -> None:
        xb = augment_batch(self.x[idx], self.g) if self.recipe.augment else self.x[idx]
        yb, wb = self.y[idx], weight[idx]
        if mixup:
            lam = float(self.rng.beta(self.recipe.mixup_alpha, self.recipe.mixup_alpha))
            perm = torch.randperm(len(idx), generator=self.g).to(self.device)
            xb = lam * xb + (1 - lam) * xb[perm]
        xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.dtype):
            out = self.model(xb)
        z = out.float() if offsets is None else out.float() + offsets
        # weighted cross-entropy in fp32: sum_i w_i CE_i / sum_i w_i over the batch (mixup: both
        # labels' terms, each weighted by its lambda share)
        if mixup:
            w2 = wb[perm]
            num = lam * wb * F.cross_entropy(z, yb, reduction="none") + (1 - lam) * w2 * F.cross_entropy(z, yb[perm], reduction="none")
            loss = num.sum() / (lam * wb + (1 - lam) * w2).sum().clamp_min(1e-12)
        else:
            loss = (F.cross_entropy(z, yb, reduction="none") * wb).sum() / wb.sum().clamp_min(1e-12)
        if not torch.isfinite(loss):
            raise TrainingError(f"classifier loss is {loss.item()} at epoch {epoch}; lower evaluate.lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
