"""Train a class-conditional GAN on an ImageTable: the visible two-player loop, EMA, resume.

`train_gan(cfg, train, out_dir)` builds a `Run` (`pipeline.gan_run`) and steps it; it writes
checkpoints (`pipeline.gan_checkpoints`, last two kept) and sample grids, loss curves and a
mode-collapse signal (`pipeline.gan_visuals`) while it runs, and `final.pt` at the end. Rerun after
any interruption (even `kill -9`) it resumes and ends bit-identical on CPU.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from pipeline import device as devices
from pipeline import atomic
from pipeline.config import TrainGanConfig
from pipeline.data import ImageTable
from pipeline.diffaug import AdaptiveStrength, diff_augment, parse_policy
from pipeline.errors import ConfigError, DataError, TrainingError
from pipeline.gan_checkpoints import (
    final_payload,
    finished,
    read_checkpoint,
    restore,
    save_checkpoint,
    set_aside_checkpoints,
)
from pipeline.data import data_fingerprint
from pipeline.gan_fingerprint import config_fingerprint
from pipeline.gan_guide import guide_seed, load_or_train_guide
from pipeline.gan_run import STREAMS, ClassSampler, Run, conditioning_at, make_generator
from pipeline.gan_tracking import Tracker, real_features, train_judge
from pipeline.gan_visuals import log_progress, real_spreads, write_final_visuals
from pipeline.gan_objectives import d_objective, g_objective
from pipeline.losses import LeCamAnchors, get_loss, gradient_penalty
from pipeline.models.gans import GAN_ARCHS
from pipeline.progress import tqdm

log = logging.getLogger("augment")


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



def _set_conditioning(run: Run, step: int) -> float:
    """Blend the class into G, D and the EMA generator for update `step`; the strength."""
    strength = conditioning_at(step, run.cfg)
    if run.cfg.transition_steps > 0:
        for module in (run.G, run.D, run.G_ema):
            GAN_ARCHS[run.cfg.arch].set_conditioning(module, strength)
    return strength


# ----------------------------------------------------------------------------- building a run


def _build_run(cfg: TrainGanConfig, train: ImageTable, classes: list[int], dist: devices.DistInfo) -> Run:
    if cfg.aux_twin and cfg.aux_weight == 0:
        raise ConfigError(f"train_gan.aux_twin twins the AC-GAN class head, and aux_weight is 0 (recipe {cfg.recipe!r}); "
                          "set aux_weight > 0, or aux_twin: false")
    if cfg.ms_weight > 0 and cfg.batch_size < 2:
        raise ConfigError(f"train_gan.ms_weight {cfg.ms_weight} compares pairs of fakes of one class, and batch_size is "
                          f"{cfg.batch_size} (recipe {cfg.recipe!r}); set batch_size >= 2, or ms_weight: 0")
    if cfg.ada_target > 0 and not parse_policy(cfg.diffaug):
        raise ConfigError(f"train_gan.ada_target {cfg.ada_target} adapts how often the diffaug policy applies, and the "
                          f"policy is empty (recipe {cfg.recipe!r}); set train_gan.diffaug, or ada_target: 0")
    device = devices.select_device(cfg.device)
    dtype = devices.choose_precision(cfg.precision, device)
    h, w, c = train.image_shape
    # weights initialised from the run's own seed; fork_rng leaves the global RNG as it was
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(make_generator(cfg.seed, STREAMS["init"]).initial_seed())
        G, D = GAN_ARCHS[cfg.arch].build(
            (c, h, w), train.num_classes, cfg.z_dim, cfg.size, cfg.width,
            aux_classifier=(1 + cfg.aux_twin) if cfg.aux_weight > 0 else 0,
        )
    G, D = devices.prepare_module(G, device), devices.prepare_module(D, device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    G_train = devices.maybe_compile(devices.wrap_ddp(G, device, dist), cfg.compile, device)
    D_train = devices.maybe_compile(devices.wrap_ddp(D, device, dist), cfg.compile, device)
    betas = (cfg.beta1, cfg.beta2)
    sampler = ClassSampler(
        train.labels, classes, cfg.balanced_sampling, make_generator(cfg.seed, STREAMS["sampler"], dist.rank)
    )
    gens = {k: make_generator(cfg.seed, STREAMS[k], dist.rank) for k in ("noise", "diffaug", "gp")}
    if cfg.embed_noise > 0:  # its own checkpointed stream; absent when off, so other runs resume as before
        gens["embed"] = make_generator(cfg.seed, STREAMS["embed"], dist.rank)
        GAN_ARCHS[cfg.arch].set_embed_noise(G, cfg.embed_noise, gens["embed"])
    images = torch.from_numpy(np.ascontiguousarray(train.images)).permute(0, 3, 1, 2).to(device)
    return Run(
        cfg, G, D, G_ema, G_train, D_train,
        torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=betas),
        torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=betas),
        get_loss(cfg.loss, cfg.label_smoothing), sampler, gens, images, device, dtype, dist,
        lecam=LeCamAnchors(cfg.lecam_decay) if cfg.lecam_weight > 0 else None,
        ada=AdaptiveStrength(cfg.ada_target, cfg.ada_images, cfg.batch_size) if cfg.ada_target > 0 else None,
    )


# ----------------------------------------------------------------------------- the two-player step


def _real_batch(run: Run) -> tuple[Tensor, Tensor]:
    rows, y = run.sampler.batch(run.cfg.batch_size)
    x = run.images[rows.to(run.device)].float() / 127.5 - 1.0  # (B, C, H, W) in [-1, 1]
    return devices.to_device_images(x, run.device), y.to(run.device)


def _noise(run: Run) -> tuple[Tensor, Tensor]:
    """(z, labels) of a fake batch; with ms_weight the labels come in pairs, y[i] == y[m + i] for
    i < B // 2 with m = B - B // 2 (`gan_objectives.pairs`), for the mode-seeking term."""
    g, b = run.gens["noise"], run.cfg.batch_size
    z = torch.randn((b, run.cfg.z_dim), generator=g)
    if run.cfg.ms_weight > 0:
        half = run.sampler.labels(b - b // 2, g)
        return z.to(run.device), torch.cat([half, half])[:b].to(run.device)
    return z.to(run.device), run.sampler.labels(b, g).to(run.device)


def _end_step(run: Run, real_logits: Tensor) -> None:
    """5. count the step; EMA of G (weights and BatchNorm buffers), a plain copy during warm-up;
    ADA's probability for the next steps from this step's real logits."""
    run.step += 1
    ema_update(run.G_ema, run.G, ema_decay_at(run.step, run.cfg.ema_decay, run.cfg.ema_warmup))
    if run.ada is not None:
        run.ada.observe(real_logits)


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
    With aux_twin a twin head T does so on the fakes: D + a * CE(T(fakes), y'), G - the same (TAC-GAN).
    With lecam_weight l > 0, D also minimises l * `lecam_penalty` (each rank its own averages);
    with ada_target > 0, aug applies each transform with ADA's probability p (`AdaptiveStrength`);
    with transition_steps > 0, the class conditions G and D (and G's class loss) only by `conditioning_at`;
    with gsr_weight s > 0, G also minimises s * the sum over its conditional BatchNorms of `group_spectral_penalty`;
    with ms_weight m > 0, the fakes' labels come in pairs and G also minimises m * `mode_seeking_penalty` of them;
    with guide_weight g > 0, G also minimises g * CE(guide(aug(G(z, y'))), y') (`gan_guide`).
    """
    cfg, ac = run.cfg, devices.autocast(run.device, run.dtype)
    aux = {"classes": True} if cfg.aux_weight > 0 else {}
    p = run.ada.p if run.ada is not None else 1.0
    strength = _set_conditioning(run, run.step + 1)
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
            out = run.D_train(diff_augment(x, cfg.diffaug, run.gens["diffaug"], p), torch.cat([y_real, y_fake]), **aux)
            logits, class_logits = out if aux else (out, None)
            real_logits, fake_logits = logits.float().split(cfg.batch_size)
            d_loss = d_objective(run, (real_logits, fake_logits), class_logits, (y_real, y_fake))
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
        out = run.D_train(x_aug := diff_augment(x_fake, cfg.diffaug, run.gens["diffaug"], p), y_fake, **aux)
        g_loss = g_objective(run, *(out if aux else (out, None)), (x_fake, z, y_fake), strength, x_aug)
    run.opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    run.opt_g.step()
    _end_step(run, real_logits)
    values = torch.stack([d_loss.detach(), g_loss.detach(), gp.detach(), real_logits.detach().mean(),
                          fake_logits.detach().mean()]).tolist()
    return [float(run.step)] + values


# ----------------------------------------------------------------------------- the loop


def resolve_classes(cfg: TrainGanConfig, train: ImageTable) -> list[int]:
    """Indices of the classes to train (`classes` names, or all); each must have images.

    Raises:
        ConfigError: a name in `train_gan.classes` that the data lacks.
        DataError: a trained class without any training image.
    """
    names = list(train.class_names)
    if cfg.classes is None:
        chosen = list(range(len(names)))
    else:
        unknown = [c for c in cfg.classes if c not in names]
        if unknown:
            raise ConfigError(f"train_gan.classes: {unknown[0]!r} is not a class of the data; valid: {', '.join(names)}")
        chosen = sorted({names.index(c) for c in cfg.classes})
    counts = train.counts()
    empty = [names[c] for c in chosen if counts[c] == 0]
    if empty:
        raise DataError(f"training data has no image of class(es) {', '.join(map(repr, empty))}; "
                        "add images or leave them out of train_gan.classes")
    return chosen


def _guide(run: Run, train: ImageTable, out_dir: Path) -> nn.Module | None:
    """The frozen guide of a run with guide_weight > 0 (`gan_guide`), else None: rank 0 loads or
    trains it (guide.pt), the other ranks load what it saved."""
    cfg, dist = run.cfg, run.dist
    if cfg.guide_weight == 0:
        return None
    args = (train, cfg.guide_epochs, guide_seed(cfg.seed), run.device, out_dir)
    guide = load_or_train_guide(*args) if dist.is_main else None
    if dist.world_size > 1:
        torch.distributed.barrier()  # guide.pt is saved before another rank reads it
        guide = load_or_train_guide(*args) if guide is None else guide
    return guide


def _check_weights(run: Run) -> None:
    """Refuse to save weights that went non-finite while the losses still looked finite."""
    for name, module in (("generator", run.G), ("discriminator", run.D)):
        if not all(torch.isfinite(p).all() for p in module.parameters()):
            raise TrainingError(f"non-finite {name} weights at step {run.step}; lower train_gan.lr_g/lr_d")


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
        ConfigError / DataError: unknown class names, a trained class without images, no CUDA.
        TrainingError: a non-finite loss (the message names the step), or a checkpoint of another
            process count in `out_dir`. Checkpoints of other params or data are kept aside in
            `previous/` (never an error), and those past `steps` are left for a longer run.
    """
    out_dir = Path(out_dir)
    if cfg.transition_steps > 0 and cfg.transition_start + cfg.transition_steps > cfg.steps:
        raise ConfigError(f"train_gan.transition_start + transition_steps ({cfg.transition_start} + {cfg.transition_steps}) "
                          f"ends after steps {cfg.steps}: final.pt would not be fully conditional; shorten the transition")
    classes = resolve_classes(cfg, train)
    fingerprint = config_fingerprint(cfg, data_fingerprint(train))
    final = out_dir / "final.pt"
    with devices.distributed(devices.select_device(cfg.device)) as dist:
        if finished(final, fingerprint, cfg.steps):
            log.info("%s is already trained to step %d with these params and data", final, cfg.steps)
            return final
        if dist.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            atomic.clean_temporaries(out_dir)
            set_aside_checkpoints(out_dir, fingerprint)
        if dist.world_size > 1:
            torch.distributed.barrier()  # the checkpoints are sorted before any rank reads one
        run = _build_run(cfg, train, classes, dist)
        run.guide = _guide(run, train, out_dir)
        if cfg.track_quality:
            if cfg.early_stop_patience > 0 and dist.world_size > 1:
                raise ConfigError("train_gan.early_stop_patience needs a single process (not torchrun); set it to 0")
            if dist.is_main:
                run.judge = train_judge(train, cfg.judge_epochs, cfg.seed, run.device.type, out_dir)
                run.real_features = real_features(run.judge, train, classes, cfg.seed)
                run.tracker = Tracker(cfg.early_stop_patience)
        found = read_checkpoint(out_dir, fingerprint, cfg.steps)
        if found is not None:
            log.info("resuming from %s", found[0].name)
            restore(run, found[1])
        _train_loop(run, out_dir, fingerprint, train, classes, found[0].name if found else None, progress)
        if dist.is_main:
            with atomic.atomic_path(final) as tmp:
                torch.save(final_payload(run, train, classes, fingerprint), tmp)
            write_final_visuals(run, out_dir, classes)
        if dist.world_size > 1:
            torch.distributed.barrier()  # other ranks return once final.pt exists
        return final


def _train_loop(
    run: Run, out_dir: Path, fingerprint: str, train: ImageTable, classes: list[int], last_good: str | None,
    progress: bool,
) -> None:
    """Steps run.step + 1 .. cfg.steps: check each step's losses; sample and checkpoint on schedule."""
    cfg, main = run.cfg, run.dist.is_main
    real_spread = real_spreads(train, classes, cfg.seed)
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
            log_progress(run, out_dir, classes, real_spread, train.class_names)
        if run.step % cfg.checkpoint_every == 0:
            _check_weights(run)
            saved = save_checkpoint(run, out_dir, fingerprint)
            last_good = saved.name if saved else last_good
        if run.tracker is not None and run.tracker.exhausted:
            log.info("early stop at step %d: no better judge score (worst class sqrt(agreement x recall)) for %d evaluations; final.pt keeps "
                     "the EMA weights of step %d", run.step, run.tracker.patience, run.tracker.best_step)
            break
    bar.close()
    _check_weights(run)
    if run.step > start:
        rate = (run.step - start) * cfg.batch_size * run.dist.world_size / (time.perf_counter() - t0)
        log.info("trained steps %d..%d at %.0f images/s (%s)", start + 1, run.step, rate, run.device)
