"""What a GAN run shows while it trains: sample grids, loss curves, the mode-collapse signal and
judge agreement (CSV files and PNGs), and the interpolation and GIF at the end.

`pipeline.gan` calls `log_progress` every `sample_every` steps and `write_final_visuals` once
(rank 0 only); every sample comes from the EMA generator and the run's fixed noise stream, so the
same run draws the same pictures.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure  # no pyplot: no global backend or figure state
from PIL import Image
from torch import Tensor, nn

from pipeline import atomic
from pipeline.grid import image_grid
from pipeline.pixels import to_float, to_uint8
from pipeline.config import TrainGanConfig
from pipeline.data import ImageTable
from pipeline.gan_run import STREAMS, Run, conditioning_at, make_generator
from pipeline.gan_tracking import QUALITY_COLUMNS, QUALITY_SAMPLES, assess, class_scores

log = logging.getLogger("augment")

GRID_COLUMNS = 8  # samples per class in each sample grid row
DIVERSITY_SAMPLES = 32  # EMA samples (and real images) per class for the mode-collapse signal
COLLAPSE_RATIO = 0.5  # warn when a class's sample diversity falls below this fraction of the real one
_LOSS_COLUMNS = ("step", "d_loss", "g_loss", "gp", "d_real", "d_fake")
_DIVERSITY_COLUMNS = ("step", "class", "fake", "real", "ratio")


# ----------------------------------------------------------------------------- pictures and tables


def _fixed_inputs(cfg: TrainGanConfig, classes: list[int], n: int, stream: int) -> tuple[Tensor, Tensor]:
    """The same (z, y) at every call: n samples per class, from the run's 'fixed' stream."""
    g = make_generator(cfg.seed, STREAMS["fixed"], stream)
    z = torch.randn((n * len(classes), cfg.z_dim), generator=g)
    y = torch.tensor(classes).repeat_interleave(n)
    return z, y


@torch.no_grad()
def _sample(G: nn.Module, z: Tensor, y: Tensor, device: torch.device, chunk: int = 256) -> Tensor:
    """G(z, y) on CPU float32, in chunks, with G in eval mode (the EMA G always is)."""
    out = [G(z[i : i + chunk].to(device), y[i : i + chunk].to(device)).float().cpu() for i in range(0, len(z), chunk)]
    return torch.cat(out)


def _write_png(path: Path, array: np.ndarray) -> None:
    img = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    with atomic.atomic_path(path) as tmp:
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


def real_spreads(train: ImageTable, classes: list[int], seed: int) -> dict[int, float]:
    """Pairwise spread of up to DIVERSITY_SAMPLES real images per class (seeded subset)."""
    rng = np.random.default_rng([seed, 7])
    out = {}
    for c in classes:
        idx = np.flatnonzero(train.labels == c)
        idx = np.sort(rng.choice(idx, size=min(len(idx), DIVERSITY_SAMPLES), replace=False))
        out[c] = _pairwise_spread(to_float(train.images[idx]).flatten(1))
    return out


def _write_csv(path: Path, header: tuple[str, ...], rows: list[list[float]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([int(v) if header[i] in ("step", "class") else f"{v:.6g}" for i, v in enumerate(row)])
    atomic.write_text(path, buf.getvalue())


def _plot_losses(path: Path, history: list[list[float]]) -> None:
    """D and G loss vs step (raw, faint, and a moving average) to a PNG."""
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
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic.write_bytes(path, buf.getvalue())


def log_progress(run: Run, out_dir: Path, classes: list[int], real_spread: dict[int, float], names: tuple) -> None:
    """Sample grid, loss curves and the mode-collapse signal at this step (rank 0 only)."""
    z, y = _fixed_inputs(run.cfg, classes, GRID_COLUMNS, stream=0)
    grid = image_grid(to_uint8(_sample(run.G_ema, z, y, run.device)).numpy(), rows=len(classes), min_cell=32)
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


def diversity_at_end(gan_dir: str | Path, names: list[str] | tuple[str, ...]) -> dict | None:
    """The mode-collapse signal at the run's last evaluation, from `gan_dir/diversity.csv`:
    {"step", "ratio": {class name: sample spread / real spread}, "collapsed": the classes below
    COLLAPSE_RATIO, those the run warned about}; None when the run wrote no signal."""
    path = Path(gan_dir) / "diversity.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = [[float(v) for v in row] for row in list(csv.reader(f))[1:] if row]
    if not rows:
        return None
    step = max(r[0] for r in rows)
    ratio = {names[int(r[1])]: round(r[4], 4) for r in rows if r[0] == step}
    return {"step": int(step), "ratio": ratio, "collapse_ratio": COLLAPSE_RATIO,
            "collapsed": [n for n, v in ratio.items() if v < COLLAPSE_RATIO]}


def _track_quality(run: Run, out_dir: Path, classes: list[int], names: tuple) -> None:
    """Judge agreement and recall per class of fixed EMA samples -> quality.csv, the log, the tracker."""
    z, y = _fixed_inputs(run.cfg, classes, QUALITY_SAMPLES, stream=3)
    agree, recall = assess(run.judge, _sample(run.G_ema, z, y, run.device), y, classes, run.real_features)
    run.tracker.update(run.step, agree, recall, classes, run.G_ema, eligible=conditioning_at(run.step, run.cfg) == 1.0)
    _write_csv(out_dir / "quality.csv", QUALITY_COLUMNS, run.tracker.rows)
    worst = int(np.argmin(class_scores(agree, recall)))
    log.info("step %d: judge agreement mean %.3f, recall mean %.3f; worst class %s: agreement %.3f, recall %.3f "
             "(best so far: step %d)", run.step, float(np.mean(agree)), float(np.nanmean(recall)),
             names[classes[worst]], agree[worst], recall[worst], run.tracker.best_step)


def write_final_visuals(run: Run, out_dir: Path, classes: list[int]) -> None:
    """interpolation.png (one row per class, z_a -> z_b) and samples.gif (the grids over training)."""
    g = make_generator(run.cfg.seed, STREAMS["fixed"], 2)
    ends = torch.randn((2, run.cfg.z_dim), generator=g)
    t = torch.linspace(0, 1, GRID_COLUMNS)[:, None]
    z = ((1 - t) * ends[0] + t * ends[1]).repeat(len(classes), 1)  # (classes * cols, z_dim)
    y = torch.tensor(classes).repeat_interleave(GRID_COLUMNS)
    _write_png(out_dir / "interpolation.png", image_grid(to_uint8(_sample(run.G_ema, z, y, run.device)).numpy(), min_cell=32, rows=len(classes)))
    frames = [Image.open(p).convert("RGB") for p in sorted((out_dir / "samples").glob("step-*.png"))]
    if frames:
        with atomic.atomic_path(out_dir / "samples.gif") as tmp:
            frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=400, loop=0)

