"""Sample the planned synthetic images from the EMA generator, deterministically per sample.

Sample i of class c gets noise from `sample_seed(seed, c, i)` and goes through G in fixed blocks
of indices, so its pixels depend on neither `batch_size` nor how the work is split. `generate`
fills a plan with a `Sampler` (G, metadata, seed, device, precision); an optional scorer with a
`ScoreFilter` keeps only samples a real-data classifier assigns to their class.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from pipeline.errors import DataError, TrainingError
from pipeline.pixels import from_uint8, to_uint8
from pipeline.progress import tqdm

log = logging.getLogger("augment")

# Rows per generator forward. CPU kernels round differently for other batch sizes (a few pixels
# in a million then flip by one level), so the forwards never follow `batch_size`: class c's
# indices 0..n-1 are cut into blocks [0, B), [B, 2B), ..., the last one shorter, and each block is
# one forward. A sample thus always meets the same computation. 256 rows keep 2 CPU cores busy.
FORWARD_BLOCK = 256

Scorer = Callable[[torch.Tensor, torch.Tensor], "torch.Tensor | np.ndarray"]


def lowest_score(scorers: list[Scorer], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The lowest of the scorers' p(y_i | x_i), per image: (B,); a Scorer that passes only what each one passes."""
    return torch.stack([torch.as_tensor(s(x, y)).float().reshape(-1) for s in scorers]).amin(dim=0)


def sample_seed(run_seed: int, class_index: int, i: int) -> int:
    """The seed of sample `i` of class `class_index`: 63 bits of BLAKE2b of the three integers.

    A hash, not arithmetic like run_seed * K + i, so nearby runs, classes and indices never share
    noise; 63 bits so it fits an int64 Parquet column. The noise it seeds: `sample_noise`.
    """
    key = f"{int(run_seed)}:{int(class_index)}:{int(i)}".encode()
    digest = hashlib.blake2b(key, digest_size=8, person=b"augment-z").digest()
    return int.from_bytes(digest, "little") >> 1


_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's state increment


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function (Steele, Lea & Flood, OOPSLA 2014) on a uint64 array."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def sample_noise(seeds: list[int] | np.ndarray, z_dim: int) -> torch.Tensor:
    """(len(seeds), z_dim) float32 standard normal on the CPU, row k from `seeds[k]` alone.

    Row k is the SplitMix64 stream seeded with seeds[k]: draw t = mix(seed + t * gamma), t >= 1
    (uint64, wrapping); draws 2j+1 and 2j+2, as 53-bit uniforms, give entry j by Box-Muller. All
    rows at once in numpy, with no per-sample Python step (a per-seed `torch.Generator` cost 7 us
    per 64-d row, 8% of the bf16 generation time at 28x28), and the same numbers on any device.
    """
    s = np.asarray(seeds, dtype=np.uint64).reshape(-1, 1)
    draws = _mix64(s + np.arange(1, 2 * z_dim + 1, dtype=np.uint64) * _GOLDEN_GAMMA)  # (N, 2 z_dim)
    u = torch.from_numpy((draws >> np.uint64(11)).astype(np.float64)).mul_(2.0**-53)  # [0, 1)
    radius = torch.log1p(-u[:, 0::2]).mul_(-2.0).sqrt_()  # 1 - u in (0, 1]: the log is finite
    return radius.mul_(torch.cos(u[:, 1::2] * (2.0 * math.pi))).float()  # torch's vectorised log and cos


@dataclass
class Samples:
    """Samples of one class: their indices i, pixels, seeds and scores, row-aligned."""

    index: np.ndarray  # int64 (B,)
    images: np.ndarray  # uint8 (B, H, W, C)
    seeds: np.ndarray  # int64 (B,)
    scores: np.ndarray  # float32 (B,), NaN without a scorer

    def pick(self, rows: np.ndarray) -> "Samples":
        return Samples(self.index[rows], self.images[rows], self.seeds[rows], self.scores[rows])

    @staticmethod
    def concat(parts: list["Samples"]) -> "Samples":
        fields = ("index", "images", "seeds", "scores")
        return Samples(*(np.concatenate([getattr(p, f) for p in parts]) for f in fields))


def _expected_shape(meta: dict) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in meta["image_shape"])
    except (KeyError, TypeError, ValueError):
        raise TrainingError(
            f"generator metadata has no valid image_shape [C, H, W] (got {meta.get('image_shape')!r}); retrain"
        ) from None
    return c, h, w


def in_precision(G: torch.nn.Module, dtype: torch.dtype | None) -> torch.nn.Module:
    """G with its parameters and buffers in `dtype` (None: fp32): G itself when they already are,
    else an eval-mode copy (the caller's G is left as it is).

    Generation runs the whole forward in that dtype rather than under autocast: autocast keeps fp32
    weights, casts them again at every call and switches dtypes between the convolutions and the
    normalisations, which on the 2-core AMX machine made the bf16 forward of the MNIST-LT
    generator about half as fast as this (precision.json of 0.2.0, in git history: 4.4x fp32
    with bf16 weights, 1.4x under autocast). sngan now samples through `class_forward` instead.
    """
    target = dtype or torch.float32
    p = next(G.parameters(), None)
    if p is None or p.dtype == target:
        return G
    return copy.deepcopy(G).to(target).eval()


def for_sampling(G: torch.nn.Module, dtype: torch.dtype | None) -> torch.nn.Module:
    """G made ready for `class_forward` once, before a run: G itself when its arch builds a fused
    per-class forward (`for_class`, from fp32 weights), else `in_precision(G, dtype)`."""
    return G if hasattr(G, "for_class") else in_precision(G, dtype)


def class_forward(G: torch.nn.Module, class_index: int, dtype: torch.dtype | None) -> Callable:
    """f(z, y) -> G(z, y) for a batch of class `class_index` only, in `dtype` (None: fp32).

    Archs whose generator has `for_class` (sngan: `ClassGenerator`, the class's conditional
    BatchNorms folded into the convolutions, ReLUs and residual sums fused into them) run that:
    1.5x the images/s of the plain bf16 forward at 28x28 and 32x32x3 on the 2-core AMX machine.
    The others run G in `dtype` (`in_precision`).
    """
    fold = getattr(G, "for_class", None)
    if fold is not None:
        net = fold(class_index, dtype)
        return lambda z, y: net(z)
    Gp = in_precision(G, dtype)
    return lambda z, y: Gp(z if dtype is None else z.to(dtype), y)


def _forward(
    G: Callable, z: torch.Tensor, y: torch.Tensor, shape: tuple[int, int, int],
) -> torch.Tensor:
    """G(z, y) (a `class_forward`) as uint8 (B, H, W, C) on G's device, checked against the
    metadata's shape; the pixels are quantised from fp32 whatever the precision of the forward.
    """
    x = G(z, y).float()
    if tuple(x.shape) != (len(z), *shape):
        raise TrainingError(
            f"generator output {list(x.shape)[1:]} differs from its metadata's image_shape {list(shape)}; "
            "retrain or fix the checkpoint"
        )
    if not torch.isfinite(x.sum()):  # one reduction: NaN/inf anywhere (or absurd values) make it non-finite
        raise TrainingError(
            f"generator produced non-finite pixels for class {int(y[0])}; the checkpoint is broken: retrain"
        )
    return to_uint8(x)


def _score(scorer: Scorer, u8: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The scorer's probability of class y for the images as stored (uint8 -> [-1, 1] NCHW)."""
    p = torch.as_tensor(scorer(from_uint8(u8), y)).detach().float().reshape(-1)
    if p.numel() != len(y):
        raise ValueError(f"scorer returned {p.numel()} scores for {len(y)} images")
    return p.cpu()


def blocks(n: int, block: int = FORWARD_BLOCK) -> list[tuple[int, int]]:
    """The forward blocks of indices 0..n-1: [(0, B), (B, 2B), ..., (kB, n)]."""
    return [(a, min(a + block, n)) for a in range(0, n, block)]


@dataclass(frozen=True)
class Sampler:
    """What one run samples with and how: the generator, its metadata, the run seed, where and in
    which precision G runs, the rows per forward and an optional scorer.

    Attributes:
        G: G(z (B, z_dim) float32, y (B,) long) -> (B, C, H, W) in [-1, 1]; `generate` puts it in
            eval mode (and restores it after) so BatchNorm uses its running statistics. For
            `sample_blocks` and `sample_range` it must be in eval mode already; pass it through
            `for_sampling` first to save a copy per call.
        meta: the checkpoint metadata: `z_dim`, `image_shape` [C, H, W], `class_names`.
        seed: the run seed; sample i of class c uses `sample_seed(seed, c, i)`.
        device: where G runs; the noise is drawn on the CPU, so it is the same on any device.
        dtype: precision of G's forward: None (fp32) or torch.bfloat16 (weights and activations;
            see `in_precision`), as `pipeline.device.choose_precision` resolves `generate.precision`.
            Like `block`, it is part of the computation: against fp32, bf16 moved 16% of the pixels
            of the MNIST-LT GAN (by 0.24 of 255 levels on average, 4% of them by more than one, at
            most 13; the judge's class consistency stayed 0.9984) and 34% of the GTSRB-LT GAN's
            (mean 0.36, at most 7); the same precision always gives the same bytes whatever
            `batch_size`. Each class runs through `class_forward` (sngan: fused per class).
        block: rows per generator forward (and scorer call); unlike `batch_size`, it can change
            the last bits of the float output, hence a pixel now and then (see FORWARD_BLOCK).
        scorer: optional callable(images (B, C, H, W) in [-1, 1], labels (B,)) -> probability of
            the intended class, (B,). Each sample's score is recorded (NaN without a scorer).
    """

    G: torch.nn.Module
    meta: dict
    seed: int
    device: str | torch.device = "cpu"
    dtype: torch.dtype | None = None
    block: int = FORWARD_BLOCK
    scorer: Scorer | None = None


@dataclass(frozen=True)
class ScoreFilter:
    """Which scored samples `generate` keeps (it needs a `Sampler.scorer`; without one all are kept).

    Attributes:
        tau: keep samples with score >= tau (0: keep all), trying further indices up to
            `max_oversample` x the quota (see `generate`'s `stats`).
        max_oversample: the most samples tried per class, as a multiple of its quota (>= 1).
        fill: a class short of accepted samples is filled with its best rejected ones (True), or
            keeps only the accepted ones, fewer than its quota (False); a warning says which.
    """

    tau: float = 0.0
    max_oversample: float = 10.0
    fill: bool = False


@torch.inference_mode()
def sample_blocks(sampler: Sampler, class_index: int, spans: list[tuple[int, int]]) -> Samples:
    """The samples of one class in `spans` (index ranges from `blocks`), one forward per span.

    Each span is one forward (and one call of `sampler.scorer`, if any); the results come to the
    host once. The forward is `class_forward(sampler.G, class_index, sampler.dtype)`.
    """
    meta, device = sampler.meta, sampler.device
    shape = _expected_shape(meta)
    forward = class_forward(sampler.G, class_index, sampler.dtype)
    index = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in spans])
    seeds = [sample_seed(sampler.seed, class_index, int(i)) for i in index]
    z_all = sample_noise(seeds, int(meta["z_dim"]))  # on the CPU: the same noise on any device
    images, scores, row = [], [], 0
    for a, b in spans:
        y = torch.full((b - a,), class_index, dtype=torch.long, device=device)
        u8 = _forward(forward, z_all[row : row + b - a].to(device), y, shape)
        images.append(u8)
        scored = sampler.scorer is not None
        scores.append(_score(sampler.scorer, u8, y) if scored else torch.full((b - a,), float("nan")))
        row += b - a
    return Samples(
        index,
        torch.cat(images).cpu().numpy(),
        np.asarray(seeds, dtype=np.int64),
        torch.cat(scores).numpy().astype(np.float32),
    )


def sample_range(
    sampler: Sampler, class_index: int, start: int, stop: int, quota: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Unfiltered samples start..stop-1 of a class with `quota` samples: a parallel worker's share.

    Returns (uint8 NHWC, seeds); `sampler.scorer` is not called. Any split of 0..quota into ranges
    gives, concatenated, the same bytes as `generate` with that quota (the blocks depend on the
    quota, not on the split).
    """
    if not 0 <= start <= stop <= quota:
        raise ValueError(f"need 0 <= start <= stop <= quota, got {start}, {stop}, {quota}")
    c, h, w = _expected_shape(sampler.meta)
    spans = [(a, b) for a, b in blocks(quota, sampler.block) if a < stop and b > start]
    if not spans:
        return np.zeros((0, h, w, c), np.uint8), np.zeros(0, np.int64)
    s = sample_blocks(replace(sampler, scorer=None), class_index, spans)  # builds the class forward once itself
    keep = (s.index >= start) & (s.index < stop)
    return s.images[keep], s.seeds[keep]


def _check_plan(plan: dict[str, int], class_names: list[str]) -> list[int]:
    """Quota per class index (0 for classes the plan leaves out); unknown classes are an error."""
    unknown = [k for k in plan if k not in class_names]
    if unknown:
        raise DataError(
            f"plan class(es) {unknown} are not among the generator's classes {class_names}; "
            "rerun `augment plan` and `augment train-gan` on the same prepared data"
        )
    quotas = []
    for name in class_names:
        n = plan.get(name, 0)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise DataError(f"plan[{name!r}] = {n!r}: quotas must be integers >= 0")
        quotas.append(int(n))
    return quotas


def _sample_class(
    sampler: Sampler, c: int, quota: int, keep: ScoreFilter, batch_size: int, bar,
) -> tuple[Samples, dict]:
    """`quota` samples of class c: the first ones in index order with score >= keep.tau.

    Indices 0..limit-1, limit = ceil(keep.max_oversample * quota), are tried in order; if fewer than
    `quota` pass, the best-scoring rejected ones fill the gap (with `keep.fill`; without, the class
    keeps fewer and the bar's total shrinks) and the stats say how many. Samples after the last
    one kept are never looked at, so the result does not depend on `batch_size`.
    """
    tau = keep.tau
    filtering = sampler.scorer is not None and tau > 0
    limit = max(quota, math.ceil(keep.max_oversample * quota)) if filtering else quota
    todo = blocks(limit, sampler.block)
    per_step = max(1, math.ceil(batch_size / sampler.block))
    kept: list[Samples] = []
    rejected: list[Samples] = []
    n_kept, tried = 0, 0
    while n_kept < quota and todo:
        spans, todo = todo[:per_step], todo[per_step:]
        s = sample_blocks(sampler, c, spans)
        accept = s.scores >= tau if filtering else np.ones(len(s.index), dtype=bool)
        take = np.flatnonzero(accept)[: quota - n_kept]
        seen = (np.arange(len(accept)) <= take[-1]) if n_kept + len(take) == quota else np.ones(len(accept), bool)
        kept.append(s.pick(take))
        rejected.append(s.pick(np.flatnonzero(seen & ~accept)))
        n_kept += len(take)
        tried += int(seen.sum())
        bar.update(len(take))
    stats = {"quota": quota, "tried": tried, "accepted": n_kept, "below_tau": quota - n_kept if keep.fill else 0}
    if n_kept < quota and keep.fill:
        pool = Samples.concat(rejected)
        # highest score first, then the lowest index (NaN scores sort last)
        best = np.lexsort((pool.index, -pool.scores))[: quota - n_kept]
        kept.append(pool.pick(best))
        bar.update(quota - n_kept)
    elif n_kept < quota:
        bar.total -= quota - n_kept
        bar.refresh()
    out = Samples.concat(kept)
    return out.pick(np.argsort(out.index, kind="stable")), stats


def generate(
    sampler: Sampler,
    plan: dict[str, int],
    batch_size: int,
    keep: ScoreFilter = ScoreFilter(),
    progress: bool = True,
    stats: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sample every class's quota of `plan` with the (EMA) generator `sampler.G`.

    Args:
        sampler: the generator, its metadata, the run seed, device, precision, block and scorer
            (see `Sampler`); G is put in eval mode here and its mode restored after.
        plan: {class name: images to add}; classes left out get none.
        batch_size: samples per step, rounded up to whole blocks: how much is held on the device
            and moved to the host at once. It never changes the output (see FORWARD_BLOCK).
        keep: with a scorer, which samples to keep (see `ScoreFilter`); the default keeps all.
        progress: show a progress bar.
        stats: if given, filled with {class name: {quota, tried, accepted, below_tau}}.

    Returns:
        images uint8 (N, H, W, C), labels int64 (N,) indices into meta["class_names"], seeds int64
        (N,), scores float32 (N,) (NaN without a scorer); classes in index order, samples in
        index order within a class.
    """
    block, max_oversample = sampler.block, keep.max_oversample
    if batch_size < 1 or block < 1 or max_oversample < 1:
        raise ValueError(
            f"need batch_size >= 1, block >= 1, max_oversample >= 1; got {batch_size}, {block}, {max_oversample}"
        )
    names = [str(n) for n in sampler.meta["class_names"]]
    quotas = _check_plan(plan, names)
    c_, h, w = _expected_shape(sampler.meta)
    parts, labels = [], []
    G = sampler.G
    was_training = G.training
    G.eval()
    ready = replace(sampler, G=for_sampling(G, sampler.dtype))  # once, not per step
    try:
        with tqdm(total=sum(quotas), desc="generate", unit="img", disable=not progress) as bar:
            for c, quota in enumerate(quotas):
                if quota == 0:
                    continue
                s, st = _sample_class(ready, c, quota, keep, batch_size, bar)
                if st["accepted"] < quota:
                    log.warning("class %r: only %d of %d samples reached score >= %s after %d tries; %s",
                                names[c], st["accepted"], quota, keep.tau, st["tried"],
                                f"filled with the {st['below_tau']} best below it" if keep.fill else
                                "kept those alone (generate.filter.fill: false)")
                if stats is not None:
                    stats[names[c]] = st
                parts.append(s)
                labels.append(np.full(len(s.index), c, dtype=np.int64))
    finally:
        G.train(was_training)
    if not parts:
        return np.zeros((0, h, w, c_), np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    out = Samples.concat(parts)
    return out.images, np.concatenate(labels), out.seeds, out.scores
