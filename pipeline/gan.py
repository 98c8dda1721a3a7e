"""Train a class-conditional GAN on an ImageTable: the visible two-player loop, EMA, checkpoints, resume.

`train_gan(cfg, train, out_dir)` writes `checkpoint-<step>.pt` (last two kept), loss curves, sample
grids and a mode-collapse signal while it runs, and `final.pt` at the end; rerun after any
interruption (even `kill -9`) it resumes and ends bit-identical on CPU. `load_generator(final.pt)`
gives the EMA generator back for sampling.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import io as bytes_io
import json
import logging
import random
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline import device as devices
from pipeline import io
from pipeline.config import TrainGanConfig
from pipeline.data import ImageTable
from pipeline.diffaug import diff_augment
from pipeline.errors import ConfigError, DataError, TrainingError
from pipeline.gan_tracking import QUALITY_COLUMNS, QUALITY_SAMPLES, Tracker, agreement, train_judge
from pipeline.losses import GanLoss, get_loss, gradient_penalty
from pipeline.models.gans import GAN_ARCHS

log = logging.getLogger("augment")

FORMAT = "augment-gan/1"
CHECKPOINT_FORMAT = "augment-gan-checkpoint/1"
KEEP_CHECKPOINTS = 2
# checkpoints of other train_gan params or data are moved to previous/<fingerprint[:12]>/ (and back
# when those params return); this many such runs are kept, the least recently set aside go first
PREVIOUS_DIR = "previous"
KEEP_PREVIOUS = 3
GRID_COLUMNS = 8  # samples per class in each sample grid row
DIVERSITY_SAMPLES = 32  # EMA samples (and real images) per class for the mode-collapse signal
COLLAPSE_RATIO = 0.5  # warn when a class's sample diversity falls below this fraction of the real one
# config fields that do not change the trained weights (a run may be resumed with other values);
# `recipe` names where the values came from, which are fingerprinted themselves
_UNFINGERPRINTED = ("steps", "checkpoint_every", "sample_every", "device", "compile", "cpu_threads", "recipe")
_LOSS_COLUMNS = ("step", "d_loss", "g_loss", "gp", "d_real", "d_fake")
_DIVERSITY_COLUMNS = ("step", "class", "fake", "real", "ratio")


# ----------------------------------------------------------------------------- conversions


def to_float(images: np.ndarray) -> Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [-1, 1] (x / 127.5 - 1)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(x: Tensor) -> np.ndarray:
    """float (N, C, H, W) in [-1, 1] -> uint8 (N, H, W, C), rounded and clipped."""
    x = ((x.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255)
    return x.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


# ----------------------------------------------------------------------------- EMA


def ema_decay_at(step: int, decay: float, warmup: int) -> float:
    """The EMA decay to apply after generator update number `step` (1-based).

    0 (a plain copy) for the first `warmup` steps, then min(decay, (1 + step) / (10 + step)): an
    EMA without warm-up keeps part of the random init for thousands of steps, and its samples
    were seen to hurt the downstream classifier.
    """
    if step <= warmup:
        return 0.0
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, in place.

    Covers parameters and float buffers (BatchNorm running mean/var, used by the EMA generator
    in eval mode); integer buffers (num_batches_tracked) are copied.
    """
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        if e.is_floating_point():
            e.lerp_(b, 1.0 - decay)
        else:
            e.copy_(b)


# ----------------------------------------------------------------------------- fingerprints


def data_fingerprint(table: ImageTable) -> str:
    """sha256 over image shape, class names, labels (int64) and image bytes."""
    h = hashlib.sha256()
    h.update(json.dumps([list(table.images.shape), list(table.class_names)]).encode())
    h.update(np.ascontiguousarray(table.labels, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(table.images).tobytes())
    return h.hexdigest()


def config_fingerprint(cfg: TrainGanConfig, data_fp: str) -> str:
    """sha256 of the config fields that shape the weights, plus the data fingerprint."""
    fields = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in _UNFINGERPRINTED}
    return hashlib.sha256(json.dumps([fields, data_fp], sort_keys=True).encode()).hexdigest()


def make_generator(seed: int, *stream: int) -> torch.Generator:
    """A CPU generator for one named random stream of run `seed` (independent streams)."""
    state = np.random.SeedSequence([seed, *stream]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


# random streams of a run, each its own generator; those a step advances are checkpointed, the
# others ("init", "fixed": weight init, grid/diversity noise) are recreated from the seed
_STREAMS = {"init": 0, "sampler": 1, "noise": 2, "diffaug": 3, "gp": 4, "fixed": 5}


# ----------------------------------------------------------------------------- sampling


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


# ----------------------------------------------------------------------------- run state


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
    gens: dict[str, torch.Generator]  # "noise", "diffaug", "gp" (the sampler holds its own)
    images: Tensor  # uint8 (N, C, H, W) on the device
    device: torch.device
    dtype: torch.dtype | None
    dist: devices.DistInfo
    step: int = 0
    history: list[list[float]] = dataclasses.field(default_factory=list)
    diversity: list[list[float]] = dataclasses.field(default_factory=list)
    judge: nn.Module | None = None  # train_gan.track_quality (rank 0): labels EMA samples
    tracker: Tracker | None = None


def _build_run(cfg: TrainGanConfig, train: ImageTable, classes: list[int], dist: devices.DistInfo) -> Run:
    device = devices.select_device(cfg.device)
    dtype = devices.choose_precision(cfg.precision, device)
    h, w, c = train.image_shape
    # weights initialised from the run's own seed; fork_rng leaves the global RNG as it was
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(make_generator(cfg.seed, _STREAMS["init"]).initial_seed())
        G, D = GAN_ARCHS[cfg.arch].build(
            (c, h, w), train.num_classes, cfg.z_dim, cfg.size, cfg.width, aux_classifier=cfg.aux_weight > 0
        )
    G, D = devices.prepare_module(G, device), devices.prepare_module(D, device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    G_train = devices.maybe_compile(devices.wrap_ddp(G, device, dist), cfg.compile, device)
    D_train = devices.maybe_compile(devices.wrap_ddp(D, device, dist), cfg.compile, device)
    betas = (cfg.beta1, cfg.beta2)
    sampler = ClassSampler(
        train.labels, classes, cfg.balanced_sampling, make_generator(cfg.seed, _STREAMS["sampler"], dist.rank)
    )
    gens = {k: make_generator(cfg.seed, _STREAMS[k], dist.rank) for k in ("noise", "diffaug", "gp")}
    images = torch.from_numpy(np.ascontiguousarray(train.images)).permute(0, 3, 1, 2).to(device)
    return Run(
        cfg, G, D, G_ema, G_train, D_train,
        torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=betas),
        torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=betas),
        get_loss(cfg.loss, cfg.label_smoothing), sampler, gens, images, device, dtype, dist,
    )


# ----------------------------------------------------------------------------- the two-player step


def _real_batch(run: Run) -> tuple[Tensor, Tensor]:
    rows, y = run.sampler.batch(run.cfg.batch_size)
    x = run.images[rows.to(run.device)].float() / 127.5 - 1.0  # (B, C, H, W) in [-1, 1]
    return devices.to_device_images(x, run.device), y.to(run.device)


def _noise(run: Run) -> tuple[Tensor, Tensor]:
    g = run.gens["noise"]
    z = torch.randn((run.cfg.batch_size, run.cfg.z_dim), generator=g)
    return z.to(run.device), run.sampler.labels(run.cfg.batch_size, g).to(run.device)


def train_step(run: Run) -> list[float]:
    """One generator update after `n_dis` discriminator updates; returns the logged losses.

    With D(x, y) the logit and the objective pair chosen by `loss` (hinge by default):
      D: min E[max(0, 1 - D(aug(x), y))] + E[max(0, 1 + D(aug(G(z, y')), y'))]
      G: min -E[D(aug(G(z, y')), y')]
    where aug is DiffAugment, applied to real and fake alike so that D never sees clean images.
    With aux_weight a > 0 (AC-GAN style), D's class head C learns the labels of real images and
    G is pushed to make samples C assigns to their intended class:
      D: ... + a * CE(C(aug(x)), y)        G: ... + a * CE(C(aug(G(z, y'))), y')
    C never trains on fakes, so it stays a judge of real classes rather than of G's mistakes.
    """
    cfg, ac = run.cfg, devices.autocast(run.device, run.dtype)
    aux = {"classes": True} if cfg.aux_weight > 0 else {}
    gp = torch.zeros((), device=run.device)
    run.D.requires_grad_(True)
    for i in range(cfg.n_dis):
        # 1. a class-balanced real batch, and fakes for labels drawn the same way; the last
        #    D round keeps G's graph so that step 4 reuses these fakes (one G forward per step)
        x_real, y_real = _real_batch(run)
        z, y_fake = _noise(run)
        with torch.set_grad_enabled(i == cfg.n_dis - 1), ac:
            x_fake = run.G_train(z, y_fake)
        # 2. update D on one batch [real; fake]: a single forward, so DDP sees one pass per backward
        x = torch.cat([x_real, x_fake.detach().to(x_real.dtype)])
        with ac:
            out = run.D_train(diff_augment(x, cfg.diffaug, run.gens["diffaug"]), torch.cat([y_real, y_fake]), **aux)
            logits, class_logits = out if aux else (out, None)
            real_logits, fake_logits = logits.float().split(cfg.batch_size)
            d_loss = run.loss.d_loss(real_logits, fake_logits)
            if aux:
                d_loss = d_loss + cfg.aux_weight * F.cross_entropy(class_logits[: cfg.batch_size].float(), y_real)
            if run.loss.gradient_penalty:
                # 3. WGAN-GP: pull ||grad_x D|| towards 1 between real and fake (same labels)
                gp = gradient_penalty(run.D, x_real, x_fake, y_real, run.gens["gp"])
                d_loss = d_loss + cfg.gp_weight * gp
        run.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        run.opt_d.step()
    # 4. update G through the updated D; D's weights frozen (under DDP every parameter must
    #    get a gradient each backward, so there D's are computed and discarded)
    if run.dist.world_size == 1:
        run.D.requires_grad_(False)
    with ac:
        out = run.D_train(diff_augment(x_fake, cfg.diffaug, run.gens["diffaug"]), y_fake, **aux)
        g_logits, g_class_logits = out if aux else (out, None)
        g_loss = run.loss.g_loss(g_logits.float())
        if aux:
            g_loss = g_loss + cfg.aux_weight * F.cross_entropy(g_class_logits.float(), y_fake)
    run.opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    run.opt_g.step()
    # 5. EMA of G (weights and BatchNorm buffers), a plain copy during warm-up
    run.step += 1
    ema_update(run.G_ema, run.G, ema_decay_at(run.step, cfg.ema_decay, cfg.ema_warmup))
    values = torch.stack([d_loss.detach(), g_loss.detach(), gp.detach(), real_logits.detach().mean(),
                          fake_logits.detach().mean()]).tolist()
    return [float(run.step)] + values


# ----------------------------------------------------------------------------- checkpoints


def _numpy_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _set_numpy_state(s: dict) -> None:
    keys = s["keys"].numpy().astype(np.uint32)
    np.random.set_state((s["name"], keys, s["pos"], s["has_gauss"], s["cached"]))


def _python_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _set_python_state(s: list) -> None:
    random.setstate((s[0], tuple(s[1]), s[2]))


def _gather(obj: object, dist: devices.DistInfo) -> list:
    """[obj of rank 0, obj of rank 1, ...]; [obj] when not distributed."""
    if dist.world_size == 1:
        return [obj]
    out: list = [None] * dist.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def _rng_states(run: Run) -> dict:
    """Every RNG state the run depends on, as tensors and plain Python (weights_only-loadable)."""
    mine = {k: g.get_state() for k, g in run.gens.items()} | {"sampler": run.sampler.generator.get_state()}
    states = {"torch": torch.get_rng_state(), "numpy": _numpy_state(), "python": _python_state(),
              "per_rank": _gather(mine, run.dist)}
    if torch.cuda.is_available() and run.device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(run.device)
    return states


def _set_rng_states(run: Run, states: dict) -> None:
    torch.set_rng_state(states["torch"])
    _set_numpy_state(states["numpy"])
    _set_python_state(states["python"])
    mine = states["per_rank"][run.dist.rank]
    run.sampler.generator.set_state(mine["sampler"])
    for k, g in run.gens.items():
        g.set_state(mine[k])
    if "cuda" in states and run.device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], run.device)


def checkpoint_path(out_dir: Path, step: int) -> Path:
    return out_dir / f"checkpoint-{step}.pt"


def list_checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of `checkpoint-<step>.pt` files in `out_dir`, oldest first."""
    found = []
    for p in out_dir.glob("checkpoint-*.pt"):
        m = re.fullmatch(r"checkpoint-(\d+)\.pt", p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_checkpoint(run: Run, out_dir: Path, fingerprint: str) -> Path | None:
    """Write checkpoint-<step>.pt atomically (rank 0) and drop all but the last KEEP_CHECKPOINTS."""
    rng = _rng_states(run)  # every rank joins the gather
    if not run.dist.is_main:
        return None
    payload = {
        "format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "step": run.step,
        "world_size": run.dist.world_size, "g": run.G.state_dict(), "d": run.D.state_dict(),
        "g_ema": run.G_ema.state_dict(), "opt_g": run.opt_g.state_dict(), "opt_d": run.opt_d.state_dict(),
        "rng": rng, "history": torch.tensor(run.history, dtype=torch.float64),
        "diversity": torch.tensor(run.diversity, dtype=torch.float64),
        "tracker": run.tracker.state() if run.tracker else None,
    }
    path = checkpoint_path(out_dir, run.step)
    with io.atomic_path(path) as tmp:
        torch.save(payload, tmp)
    # checkpoints past this step (a longer run of the same params) stay: raising steps resumes there
    done = [p for step, p in list_checkpoints(out_dir) if step <= run.step]
    for old in done[:-KEEP_CHECKPOINTS]:
        old.unlink(missing_ok=True)
    return path


def _checkpoint_fingerprint(path: Path) -> str | None:
    """The fingerprint a checkpoint was written for; None if it is unreadable or not augment's."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - unreadable: _read_checkpoint warns and skips it
        return None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        return None
    return str(ckpt.get("fingerprint"))


def set_aside_checkpoints(out_dir: Path, fingerprint: str) -> None:
    """Keep checkpoints by the params and data they were trained with, so a change never blocks.

    Checkpoints of another fingerprint move to `previous/<their fingerprint[:12]>/`; those of
    this one that an earlier change set aside come back (training resumes where it stood). At
    most KEEP_PREVIOUS other runs are kept.
    """
    aside = out_dir / PREVIOUS_DIR
    moved: set[str] = set()
    for _, path in list_checkpoints(out_dir):
        fp = _checkpoint_fingerprint(path)
        if fp is not None and fp != fingerprint:
            (aside / fp[:12]).mkdir(parents=True, exist_ok=True)
            path.replace(aside / fp[:12] / path.name)
            moved.add(fp[:12])
    if moved:
        log.info("checkpoints of other train_gan params or data kept aside in %s/%s", aside, ", ".join(sorted(moved)))
    mine = aside / fingerprint[:12]
    if mine.is_dir():
        for step, path in list_checkpoints(mine):
            if not checkpoint_path(out_dir, step).exists():
                path.replace(checkpoint_path(out_dir, step))
        for p in mine.iterdir():
            p.unlink()
        mine.rmdir()
        log.info("checkpoints of these params were kept aside by an earlier change: resuming from them")
    if aside.is_dir():
        runs = sorted((d for d in aside.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime)
        for old in runs[:-KEEP_PREVIOUS]:
            for p in old.iterdir():
                p.unlink()
            old.rmdir()


def _read_checkpoint(out_dir: Path, fingerprint: str, steps: int) -> tuple[Path, dict] | None:
    """The newest readable checkpoint of this config and dataset at a step <= `steps`.

    Checkpoints of other params are moved aside first (`set_aside_checkpoints`, rank 0); those
    past `steps` (the same run trained longer) are left for a later, longer run.
    """
    for step, path in reversed(list_checkpoints(out_dir)):
        if step > steps:
            continue
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file: fall back to the previous one
            log.warning("%s: unreadable (%s); trying an older checkpoint", path, e.__class__.__name__)
            continue
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise TrainingError(f"{path}: not an augment GAN checkpoint; move it out of {out_dir}")
        if ckpt["fingerprint"] != fingerprint:
            continue  # another run's, which rank 0 could not move (e.g. a read-only copy): start afresh
        return path, ckpt
    return None


def _restore(run: Run, ckpt: dict) -> None:
    if ckpt["world_size"] != run.dist.world_size:
        raise TrainingError(
            f"checkpoint was written by {ckpt['world_size']} process(es), this run has "
            f"{run.dist.world_size}; resume with the same torchrun --nproc_per_node"
        )
    run.G.load_state_dict(ckpt["g"])
    run.D.load_state_dict(ckpt["d"])
    run.G_ema.load_state_dict(ckpt["g_ema"])
    run.opt_g.load_state_dict(ckpt["opt_g"])
    run.opt_d.load_state_dict(ckpt["opt_d"])
    _set_rng_states(run, ckpt["rng"])
    run.step = int(ckpt["step"])
    run.history = ckpt["history"].tolist()
    run.diversity = ckpt["diversity"].tolist()
    if run.tracker is not None and ckpt.get("tracker"):
        run.tracker = Tracker.restore(ckpt["tracker"])


# ----------------------------------------------------------------------------- visual logs


def _fixed_inputs(cfg: TrainGanConfig, classes: list[int], n: int, stream: int) -> tuple[Tensor, Tensor]:
    """The same (z, y) at every call: n samples per class, from the run's 'fixed' stream."""
    g = make_generator(cfg.seed, _STREAMS["fixed"], stream)
    z = torch.randn((n * len(classes), cfg.z_dim), generator=g)
    y = torch.tensor(classes).repeat_interleave(n)
    return z, y


@torch.no_grad()
def _sample(G: nn.Module, z: Tensor, y: Tensor, device: torch.device, chunk: int = 256) -> Tensor:
    """G(z, y) on CPU float32, in chunks, with G in eval mode (the EMA G always is)."""
    out = [G(z[i : i + chunk].to(device), y[i : i + chunk].to(device)).float().cpu() for i in range(0, len(z), chunk)]
    return torch.cat(out)


def image_grid(images: np.ndarray, rows: int, min_cell: int = 32, pad: int = 2) -> np.ndarray:
    """uint8 (rows*cols, H, W, C) -> one uint8 (H', W', C) mosaic; cells upscaled to >= min_cell px."""
    n, h, w, c = images.shape
    cols = n // rows
    scale = max(1, -(-min_cell // max(h, w)))
    cells = images.repeat(scale, axis=1).repeat(scale, axis=2)
    hs, ws = h * scale + pad, w * scale + pad
    grid = np.full((rows * hs + pad, cols * ws + pad, c), 255, dtype=np.uint8)
    for i in range(rows * cols):
        r, k = divmod(i, cols)
        grid[pad + r * hs : pad + r * hs + h * scale, pad + k * ws : pad + k * ws + w * scale] = cells[i]
    return grid


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    img = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    with io.atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def _pairwise_spread(x: Tensor) -> float:
    """Mean L2 distance between distinct rows of x (n, d) -> float; 0 for n < 2."""
    if len(x) < 2:
        return 0.0
    d = torch.cdist(x.double(), x.double())
    return float(d.sum() / (len(x) * (len(x) - 1)))


def _diversity(run: Run, classes: list[int], real_spread: dict[int, float]) -> list[list[float]]:
    """[step, class, fake spread, real spread, ratio] per class: the mode-collapse signal."""
    z, y = _fixed_inputs(run.cfg, classes, DIVERSITY_SAMPLES, stream=1)
    fake = _sample(run.G_ema, z, y, run.device).flatten(1)
    rows = []
    for i, c in enumerate(classes):
        f = _pairwise_spread(fake[i * DIVERSITY_SAMPLES : (i + 1) * DIVERSITY_SAMPLES])
        r = real_spread[c]
        rows.append([float(run.step), float(c), f, r, f / r if r > 0 else float("nan")])
    return rows


def _real_spreads(train: ImageTable, classes: list[int], seed: int) -> dict[int, float]:
    """Pairwise spread of up to DIVERSITY_SAMPLES real images per class (seeded subset)."""
    rng = np.random.default_rng([seed, 7])
    out = {}
    for c in classes:
        idx = np.flatnonzero(train.labels == c)
        idx = np.sort(rng.choice(idx, size=min(len(idx), DIVERSITY_SAMPLES), replace=False))
        out[c] = _pairwise_spread(to_float(train.images[idx]).flatten(1))
    return out


def _write_csv(path: Path, header: tuple[str, ...], rows: list[list[float]]) -> None:
    buf = bytes_io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([int(v) if header[i] in ("step", "class") else f"{v:.6g}" for i, v in enumerate(row)])
    io.write_text(path, buf.getvalue())


def _plot_losses(path: Path, history: list[list[float]]) -> None:
    """D and G loss vs step (raw, faint, and a moving average) to a PNG."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    h = np.asarray(history)
    fig = Figure(figsize=(7, 3.5), dpi=100)
    ax = fig.subplots()
    k = max(1, len(h) // 50)
    for col, name in ((1, "D loss"), (2, "G loss")):
        line = ax.plot(h[:, 0], h[:, col], alpha=0.25, linewidth=0.8)[0]
        smooth = np.convolve(h[:, col], np.ones(k) / k, mode="valid")
        ax.plot(h[k - 1 :, 0], smooth, color=line.get_color(), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    buf = bytes_io.BytesIO()
    fig.savefig(buf, format="png")
    io.write_bytes(path, buf.getvalue())


def _log_progress(run: Run, out_dir: Path, classes: list[int], real_spread: dict[int, float], names: tuple) -> None:
    """Sample grid, loss curves and the mode-collapse signal at this step (rank 0 only)."""
    z, y = _fixed_inputs(run.cfg, classes, GRID_COLUMNS, stream=0)
    grid = image_grid(to_uint8(_sample(run.G_ema, z, y, run.device)), rows=len(classes))
    _write_png(out_dir / "samples" / f"step-{run.step:07d}.png", grid)
    rows = _diversity(run, classes, real_spread)
    run.diversity.extend(rows)
    _write_csv(out_dir / "diversity.csv", _DIVERSITY_COLUMNS, run.diversity)
    _write_csv(out_dir / "losses.csv", _LOSS_COLUMNS, run.history)
    _plot_losses(out_dir / "losses.png", run.history)
    if run.tracker is not None:
        _track_quality(run, out_dir, classes, names)
    low = [names[int(r[1])] for r in rows if r[4] < COLLAPSE_RATIO]
    if low and run.step > run.cfg.ema_warmup:  # early samples are all alike anyway
        log.warning("step %d: possible mode collapse in class(es) %s (sample diversity < %.0f%% of real)",
                    run.step, ", ".join(low), 100 * COLLAPSE_RATIO)


def _track_quality(run: Run, out_dir: Path, classes: list[int], names: tuple) -> None:
    """Judge agreement per class of fixed EMA samples -> quality.csv, the log, and the tracker."""
    z, y = _fixed_inputs(run.cfg, classes, QUALITY_SAMPLES, stream=3)
    per_class = agreement(run.judge, _sample(run.G_ema, z, y, run.device), y, classes)
    run.tracker.update(run.step, per_class, classes, run.G_ema)
    _write_csv(out_dir / "quality.csv", QUALITY_COLUMNS, run.tracker.rows)
    worst = int(np.argmin(per_class))
    log.info("step %d: judge agreement mean %.3f, worst class %s %.3f (best so far: step %d)", run.step,
             float(np.mean(per_class)), names[classes[worst]], per_class[worst], run.tracker.best_step)


def _write_final_visuals(run: Run, out_dir: Path, classes: list[int]) -> None:
    """interpolation.png (one row per class, z_a -> z_b) and samples.gif (the grids over training)."""
    from PIL import Image

    g = make_generator(run.cfg.seed, _STREAMS["fixed"], 2)
    ends = torch.randn((2, run.cfg.z_dim), generator=g)
    t = torch.linspace(0, 1, GRID_COLUMNS)[:, None]
    z = ((1 - t) * ends[0] + t * ends[1]).repeat(len(classes), 1)  # (classes * cols, z_dim)
    y = torch.tensor(classes).repeat_interleave(GRID_COLUMNS)
    _write_png(out_dir / "interpolation.png", image_grid(to_uint8(_sample(run.G_ema, z, y, run.device)), len(classes)))
    frames = [Image.open(p).convert("RGB") for p in sorted((out_dir / "samples").glob("step-*.png"))]
    if frames:
        with io.atomic_path(out_dir / "samples.gif") as tmp:
            frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=400, loop=0)


# ----------------------------------------------------------------------------- entry points


def resolve_classes(cfg: TrainGanConfig, train: ImageTable) -> list[int]:
    """Indices of the classes to train (`classes` names, or all); each must have images.

    Raises:
        ConfigError: a name in `train_gan.classes` that the data lacks, or an empty list.
        DataError: a trained class without any training image.
    """
    names = list(train.class_names)
    if cfg.classes is None:
        chosen = list(range(len(names)))
    else:
        unknown = [c for c in cfg.classes if c not in names]
        if unknown or not cfg.classes:
            bad = repr(unknown[0]) if unknown else "[]"
            raise ConfigError(f"train_gan.classes: {bad} is not a class of the data; valid: {', '.join(names)}")
        chosen = sorted({names.index(c) for c in cfg.classes})
    counts = train.counts()
    empty = [names[c] for c in chosen if counts[c] == 0]
    if empty:
        raise DataError(f"training data has no image of class(es) {', '.join(map(repr, empty))}; "
                        "add images or leave them out of train_gan.classes")
    return chosen


def _final_payload(run: Run, train: ImageTable, classes: list[int], fingerprint: str) -> dict:
    c = train.image_shape[2]
    payload = {
        "format": FORMAT, "arch": run.cfg.arch, "size": run.cfg.size, "width": run.cfg.width,
        "z_dim": run.cfg.z_dim, "image_shape": [c, *train.image_shape[:2]],
        "class_names": list(train.class_names), "num_classes": train.num_classes,
        "train_classes": [train.class_names[i] for i in classes], "config": run.cfg.model_dump(mode="json"),
        "fingerprint": fingerprint, "step": run.step,
        "g_ema": run.G_ema.state_dict(), "g": run.G.state_dict(), "d": run.D.state_dict(),
    }
    t = run.tracker
    if t is not None:
        payload |= {"quality": torch.tensor(t.rows, dtype=torch.float64), "best_step": t.best_step,
                    "best_score": list(t.best_score), "stopped_early": run.step < run.cfg.steps}
        if t.patience > 0 and t.best_state is not None:
            payload["g_ema"] = t.best_state  # the EMA weights of the best evaluation, not the last
    return payload


def _check_weights(run: Run) -> None:
    """Refuse to save weights that went non-finite while the losses still looked finite."""
    for name, module in (("generator", run.G), ("discriminator", run.D)):
        if not all(torch.isfinite(p).all() for p in module.parameters()):
            raise TrainingError(f"non-finite {name} weights at step {run.step}; lower train_gan.lr_g/lr_d")


def _finished(final: Path, fingerprint: str, steps: int) -> bool:
    """True when `final` exists and is this exact run, trained to `steps`."""
    if not final.is_file():
        return False
    try:
        meta = torch.load(final, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable old file is simply retrained and replaced
        return False
    return meta.get("fingerprint") == fingerprint and (meta.get("step") == steps or bool(meta.get("stopped_early")))


def train_gan(cfg: TrainGanConfig, train: ImageTable, out_dir: Path, progress: bool = True) -> Path:
    """Train the class-conditional GAN of `cfg` on `train`; return the path of `final.pt`.

    Resumes from the newest `checkpoint-<step>.pt` in `out_dir` at a step <= `cfg.steps` when one
    exists (same config and data), so an interrupted run ends with the weights an uninterrupted one would have (on CPU).
    Under `torchrun` each process trains on its own batches of `batch_size`; rank 0 writes.

    Args:
        cfg: the `train_gan` section of params.yaml.
        train: the training split (uint8 NHWC); classes outside `cfg.classes` are ignored.
        out_dir: folder for checkpoints, final.pt, curves and sample grids (created).
        progress: show progress with the losses (a bar on a terminal, lines in a log).

    Raises:
        ConfigError / DataError: unknown class names, a trained class without images, no CUDA,
            label smoothing with a loss other than bce.
        TrainingError: a non-finite loss (the message names the step), or a checkpoint of another
            process count in `out_dir`. Checkpoints of other params or data are kept aside in
            `previous/` (never an error), and those past `steps` are left for a longer run.
    """
    out_dir = Path(out_dir)
    classes = resolve_classes(cfg, train)
    try:
        get_loss(cfg.loss, cfg.label_smoothing)
    except ValueError as e:
        raise ConfigError(f"train_gan.label_smoothing = {cfg.label_smoothing}: {e}") from None
    fingerprint = config_fingerprint(cfg, data_fingerprint(train))
    final = out_dir / "final.pt"
    with devices.distributed(devices.select_device(cfg.device)) as dist:
        if _finished(final, fingerprint, cfg.steps):
            log.info("%s is already trained to step %d with these params and data", final, cfg.steps)
            return final
        if dist.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            io.clean_temporaries(out_dir)
            set_aside_checkpoints(out_dir, fingerprint)
        if dist.world_size > 1:
            torch.distributed.barrier()  # the checkpoints are sorted before any rank reads one
        run = _build_run(cfg, train, classes, dist)
        if cfg.track_quality:
            if cfg.early_stop_patience > 0 and dist.world_size > 1:
                raise ConfigError("train_gan.early_stop_patience needs a single process (not torchrun); set it to 0")
            if dist.is_main:
                run.judge = train_judge(train, cfg.judge_epochs, cfg.seed, run.device.type, out_dir, fingerprint)
                run.tracker = Tracker(cfg.early_stop_patience)
        found = _read_checkpoint(out_dir, fingerprint, cfg.steps)
        if found is not None:
            log.info("resuming from %s", found[0].name)
            _restore(run, found[1])
        _train_loop(run, out_dir, fingerprint, train, classes, found[0].name if found else None, progress)
        if dist.is_main:
            with io.atomic_path(final) as tmp:
                torch.save(_final_payload(run, train, classes, fingerprint), tmp)
            _write_final_visuals(run, out_dir, classes)
        if dist.world_size > 1:
            torch.distributed.barrier()  # other ranks return once final.pt exists
        return final


def _train_loop(
    run: Run, out_dir: Path, fingerprint: str, train: ImageTable, classes: list[int], last_good: str | None,
    progress: bool,
) -> None:
    """Steps run.step + 1 .. cfg.steps: check each step's losses; sample and checkpoint on schedule."""
    from pipeline.progress import tqdm

    cfg, main = run.cfg, run.dist.is_main
    real_spread = _real_spreads(train, classes, cfg.seed)
    bar = tqdm(total=cfg.steps, initial=run.step, desc="train-gan", disable=not (progress and main))
    t0, start = time.perf_counter(), run.step
    while run.step < cfg.steps:
        row = train_step(run)
        if not all(np.isfinite(row[1:])):
            kept = f"; the last good checkpoint {last_good} stays" if last_good else ""
            raise TrainingError(
                f"non-finite loss at step {run.step} (d_loss={row[1]:.4g}, g_loss={row[2]:.4g}); "
                f"lower train_gan.lr_g/lr_d or change train_gan.loss{kept}"
            )
        run.history.append(row)
        if run.step % 10 == 0 or run.step == cfg.steps:
            bar.set_postfix(d=f"{row[1]:.3f}", g=f"{row[2]:.3f}", refresh=False)
        bar.update(1)
        if main and (run.step % cfg.sample_every == 0 or run.step == cfg.steps):
            _log_progress(run, out_dir, classes, real_spread, train.class_names)
        if run.step % cfg.checkpoint_every == 0:
            _check_weights(run)
            saved = save_checkpoint(run, out_dir, fingerprint)
            last_good = saved.name if saved else last_good
        if run.tracker is not None and run.tracker.exhausted:
            log.info("early stop at step %d: no better judge agreement for %d evaluations; final.pt keeps "
                     "the EMA weights of step %d", run.step, run.tracker.patience, run.tracker.best_step)
            break
    bar.close()
    _check_weights(run)
    if run.step > start:
        rate = (run.step - start) * cfg.batch_size * run.dist.world_size / (time.perf_counter() - t0)
        log.info("trained steps %d..%d at %.0f images/s (%s)", start + 1, run.step, rate, run.device)


def load_generator(path: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The EMA generator of a `final.pt`, in eval mode on `device`, and its metadata.

    Returns:
        (G, meta): G(z (B, z_dim), y (B,)) -> (B, C, H, W) in [-1, 1]; meta holds every field of
        final.pt except the state dicts, plus "sha256" of the file.

    Raises:
        DataError: a missing file, or one that is not an augment GAN (`format` != augment-gan/1).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: GAN checkpoint not found; run `augment train-gan` first")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt or foreign pickle: one clear line
        raise DataError(f"{path}: cannot be read as a GAN checkpoint ({e.__class__.__name__}); retrain it") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise DataError(f"{path}: not an {FORMAT} file; point at the final.pt that train-gan wrote")
    meta = {k: v for k, v in ckpt.items() if k not in ("g_ema", "g", "d")}
    meta["sha256"] = io.sha256_file(path)
    G, _ = GAN_ARCHS[meta["arch"]].build(
        tuple(meta["image_shape"]), meta["num_classes"], meta["z_dim"], meta["size"], meta.get("width")
    )
    G.load_state_dict(ckpt["g_ema"])
    # channels_last, as in training: sngan's 28x28 forward measured 1.4x faster on the AVX2 CPU
    return devices.prepare_module(G, torch.device(device)).eval().requires_grad_(False), meta
