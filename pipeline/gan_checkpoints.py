"""GAN checkpoint files: `checkpoint-<step>.pt` (the whole `Run`, RNG states included), the
set-aside of other runs' checkpoints in `previous/`, and `final.pt` (written, recognised, loaded).

`pipeline.gan.train_gan` saves and resumes through these functions; `load_generator(final.pt)`
gives the EMA generator back for sampling (`augment generate`, the oversampler). Every file is
written atomically and read with `weights_only=True`.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline import device as devices
from pipeline import atomic
from pipeline.data import ImageTable
from pipeline.errors import DataError, TrainingError
from pipeline.gan_fingerprint import recorded_config
from pipeline.gan_run import Run
from pipeline.gan_tracking import Tracker
from pipeline.models.gans import GAN_ARCHS

log = logging.getLogger("augment")

FORMAT = "augment-gan/1"
CHECKPOINT_FORMAT = "augment-gan-checkpoint/1"
KEEP_CHECKPOINTS = 2
# checkpoints of other train_gan params or data are moved to previous/<fingerprint[:12]>/ (and back
# when those params return); this many such runs are kept, the least recently set aside go first
PREVIOUS_DIR = "previous"
KEEP_PREVIOUS = 3


# ----------------------------------------------------------------------------- RNG states


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



# ----------------------------------------------------------------------------- checkpoints


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
    # only when on, so a run without LeCam or ADA writes the bytes it did before they existed
    if run.lecam is not None:
        payload["lecam"] = run.lecam.state()
    if run.ada is not None:
        payload["ada"] = run.ada.state()
    path = checkpoint_path(out_dir, run.step)
    with atomic.atomic_path(path) as tmp:
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
    except Exception:  # noqa: BLE001 - unreadable: read_checkpoint warns and skips it
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


def read_checkpoint(out_dir: Path, fingerprint: str, steps: int) -> tuple[Path, dict] | None:
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


def restore(run: Run, ckpt: dict) -> None:
    """Load a checkpoint's weights, optimiser and RNG states, history, tracker, LeCam averages and ADA state into `run`."""
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
    if run.lecam is not None and ckpt.get("lecam"):
        run.lecam.real, run.lecam.fake = ckpt["lecam"]
    if run.ada is not None and ckpt.get("ada"):
        run.ada.restore(ckpt["ada"])


# ----------------------------------------------------------------------------- final.pt


def final_payload(run: Run, train: ImageTable, classes: list[int], fingerprint: str) -> dict:
    """What final.pt holds: the architecture, classes, config and fingerprint, and the weights."""
    c = train.image_shape[2]
    payload = {
        "format": FORMAT, "arch": run.cfg.arch, "size": run.cfg.size, "width": run.cfg.width,
        "z_dim": run.cfg.z_dim, "image_shape": [c, *train.image_shape[:2]],
        "class_names": list(train.class_names), "num_classes": train.num_classes,
        "train_classes": [train.class_names[i] for i in classes], "config": recorded_config(run.cfg),
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



def finished(final: Path, fingerprint: str, steps: int) -> bool:
    """True when `final` exists and is this exact run, trained to `steps`."""
    if not final.is_file():
        return False
    try:
        meta = torch.load(final, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable old file is simply retrained and replaced
        return False
    return meta.get("fingerprint") == fingerprint and (meta.get("step") == steps or bool(meta.get("stopped_early")))



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
    meta["sha256"] = atomic.sha256_file(path)
    G, _ = GAN_ARCHS[meta["arch"]].build(
        tuple(meta["image_shape"]), meta["num_classes"], meta["z_dim"], meta["size"], meta.get("width")
    )
    G.load_state_dict(ckpt["g_ema"])
    # channels_last, as in training: sngan's 28x28 forward measured 1.4x faster on the AVX2 CPU
    return devices.prepare_module(G, torch.device(device)).eval().requires_grad_(False), meta
