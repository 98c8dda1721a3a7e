"""Time to quality: wall-clock time until every class of a GAN's samples is both recognisable and
diverse, for our recipe and the tutorial reference, in one run on one machine.

    python benchmarks/time_to_quality.py --data ../shared/datasets/mnist --long-tail deepsmote \
        --out benchmarks/results/time_to_quality_mnist_lt.json [--minutes 12] [--recipes ours reference]

Each recipe runs `augment train-gan` in a child process (what a user starts) for --minutes of wall
time (the reference for --reference-minutes), then is stopped. While it runs, every
`checkpoint-<step>.pt` it writes is hard-linked aside with its time since the child started (the
file's mtime), so the clock holds the user's whole wait: start-up, data loading, training and the
checkpoints themselves. Afterwards, outside the clock, each snapshot's EMA generator draws
SAMPLES fixed samples per class, and the benchmark referee (`speed.py`: a small CNN trained on the
full real training set) scores them per class as the tracker does (`pipeline.gan_tracking.assess`):
agreement with the intended class, and the recall of up to 200 real training images of the class
inside the samples' k-NN manifold. The bar is met at the first snapshot where every class has
agreement >= 0.98 and recall >= each --recall-bar. Each recipe is recorded as soon as it ends; a
rerun scores the recipes already trained from their snapshots and trains the missing ones.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import outcome  # noqa: E402
import speed  # noqa: E402
from gan_ablation import AGREEMENT_BAR, first_passing  # noqa: E402
from machine import code_version, machine_info  # noqa: E402

from pipeline import atomic, params_file  # noqa: E402
from pipeline.gan_checkpoints import list_checkpoints  # noqa: E402
from pipeline.gan_tracking import assess, real_features  # noqa: E402
from pipeline.gan_run import make_generator  # noqa: E402
from pipeline.models.gans import GAN_ARCHS  # noqa: E402
from pipeline.pixels import to_float, to_uint8  # noqa: E402
from pipeline.sources import ImageSpec, read_source  # noqa: E402
from pipeline.stages import stage  # noqa: E402
from pipeline.stages.files import read_prepared  # noqa: E402
from pipeline.stages.recipe import with_recipe  # noqa: E402

# name -> (train_gan values over params.yaml's auto recipe, steps between snapshots)
RECIPES = {
    "ours": ({}, 250),  # the recipe as shipped (pipeline.recipes)
    "ours_ada_n_dis2": ({"ada_target": 0.6, "n_dis": 2}, 250),  # the ablation's best recall (gan_ablation_mnist_lt.json)
    # the small_gray recipe before mode seeking, and with mode seeking at its former class loss (the
    # class-loss ablation's best worst-class recall, gan_ablation_mnist_lt_class_loss.json)
    "ours_before_ms": ({"aux_weight": 1.0, "ms_weight": 0.0}, 250),
    "ours_ms_0.3_aux1.0": ({"aux_weight": 1.0, "ms_weight": 0.3}, 250),
    # colour (GTSRB): the small_color recipe four times wider, and with MNIST's mode seeking and class loss
    "ours_width32": ({"width": 32}, 250),
    "ours_ms_0.3_aux1.5": ({"aux_weight": 1.5, "ms_weight": 0.3}, 250),
    "ours_width32_ms_0.3_aux1.5": ({"width": 32, "aux_weight": 1.5, "ms_weight": 0.3}, 250),
    # the same with a twin class head (TAC-GAN), whose G loss does not reward easy-to-classify samples
    "ours_tac_ms_0.3_aux1.5": ({"aux_weight": 1.5, "ms_weight": 0.3, "aux_twin": True}, 250),
    # classifier guidance (pipeline/gan_guide.py): a frozen real-data classifier's CE on the samples
    "ours_guide_1": ({"guide_weight": 1.0}, 250),
    "ours_guide_1_until_0.5": ({"guide_weight": 1.0, "guide_until": 0.5}, 250),
    # the same with MNIST's mode seeking: guided samples of a class collapsed to one image on GTSRB
    "ours_guide_1_until_0.5_ms_0.3": ({"guide_weight": 1.0, "guide_until": 0.5, "ms_weight": 0.3}, 250),
    "reference": (speed.REFERENCE, 2500),
}
# train_gan fields the child's command sets for the benchmark (a clock, not a step count, stops it)
CLOCK_FIELDS = ("steps", "checkpoint_every", "sample_every", "cpu_threads")
SAMPLES = 100  # per class and snapshot, as the tracker (pipeline.gan_tracking.QUALITY_SAMPLES)
NOISE_SEED = 123  # the fixed noise every snapshot of every recipe is scored on
RUN_FOREVER = 10_000_000  # train_gan.steps of the child: the clock stops it, not the step count


def first_time(curve: list[dict], recall_bar: float) -> float | None:
    """Seconds of the first snapshot where every class passes AGREEMENT_BAR and `recall_bar`; None if none."""
    first = first_passing(curve, recall_bar)
    return first and first["seconds"]


def curve_point(step: int, seconds: float, agreement: list[float], recall: list[float]) -> dict:
    """One snapshot's figures: per class and the worst and mean of each."""
    return {"step": step, "seconds": round(seconds, 2), "agreement": agreement, "recall": recall,
            "worst_agreement": min(agreement), "mean_agreement": float(np.mean(agreement)),
            "worst_recall": min(recall), "mean_recall": float(np.mean(recall))}


def budget_s(args: argparse.Namespace, name: str) -> float:
    """The wall budget of recipe `name`: --reference-minutes for the reference, --minutes otherwise."""
    return 60 * (args.reference_minutes if name == "reference" else args.minutes)


def _overrides(args: argparse.Namespace, work: Path) -> dict:
    return {"data.source": str(Path(args.data).resolve()), **outcome.profile_overrides(args.long_tail),
            **outcome.workdir_paths(work), **dict(params_file.parse_override(o) for o in args.set)}


def _recipe_overrides(args: argparse.Namespace, work: Path, name: str) -> dict:
    """`_overrides` plus recipe `name`'s train_gan values: what its child trains and its scorer builds."""
    return {**_overrides(args, work), **{f"train_gan.{k}": v for k, v in RECIPES[name][0].items()}}


def trained_settings(args: argparse.Namespace, work: Path, name: str) -> dict:
    """The train_gan settings recipe `name` trains with, the shipped recipe resolved on the prepared
    data (less CLOCK_FIELDS): a finished run counts only while they are unchanged."""
    cfg = with_recipe(params_file.load(args.params, _recipe_overrides(args, work, name)))
    return {k: v for k, v in cfg.train_gan.model_dump(mode="json").items() if k not in CLOCK_FIELDS}


def _watch(gan_dir: Path, snaps: Path, t0: float, stop: threading.Event, seen: dict[int, float]) -> None:
    """Hard-link each new checkpoint-<step>.pt of `gan_dir` into `snaps` (the trainer keeps only the
    last two) and record its mtime - t0 in `seen`."""
    while not stop.is_set():
        for step, path in list_checkpoints(gan_dir) if gan_dir.is_dir() else []:
            if step in seen:
                continue
            try:
                mtime = path.stat().st_mtime
                os.link(path, snaps / f"step-{step}.pt")
            except FileNotFoundError:  # rotated away between the listing and the link
                continue
            seen[step] = mtime - t0
        stop.wait(0.1)


def default_sigint() -> None:
    """In the child before exec: SIGINT back to its default, so Python turns it into KeyboardInterrupt
    and `augment` stops cleanly. A benchmark started as a shell background job (`cmd &`, nohup)
    ignores SIGINT, and its children inherit that: they then trained on until killed."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def train_for(args: argparse.Namespace, name: str, work: Path) -> dict:
    """Run `augment train-gan` with recipe `name` for its wall budget; its snapshots' times."""
    values, every = RECIPES[name]
    every = args.every or every
    gan_dir, snaps = work / name / "gan", work / name / "snapshots"
    (work / name / "run.json").unlink(missing_ok=True)
    for folder in (gan_dir, snaps):  # a fresh run: an old checkpoint would be resumed
        shutil.rmtree(folder, ignore_errors=True)
    snaps.mkdir(parents=True)
    sets = {**_recipe_overrides(args, work, name), "paths.gan": str(gan_dir), "train_gan.steps": RUN_FOREVER,
            "train_gan.checkpoint_every": every, "train_gan.sample_every": RUN_FOREVER, "train_gan.cpu_threads": args.threads}
    cmd = [sys.executable, "-m", "pipeline.cli", "train-gan", "--params", args.params, "-q"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={json.dumps(v)}"]  # JSON is YAML: "" stays an empty string, None null
    budget = budget_s(args, name)
    seen: dict[int, float] = {}
    stop = threading.Event()
    with open(work / name / "train-gan.log", "w") as log_file:
        t0 = time.time()
        child = subprocess.Popen(cmd, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT,
                                 env={**os.environ, "OMP_NUM_THREADS": str(args.threads)}, preexec_fn=default_sigint)
        watcher = threading.Thread(target=_watch, args=(gan_dir, snaps, t0, stop, seen), daemon=True)
        watcher.start()
        try:
            child.wait(timeout=budget)
            raise SystemExit(f"error: train-gan for {name} ended before its budget (rc {child.returncode}); "
                             f"see {work / name / 'train-gan.log'}")
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:  # a child stuck past SIGINT; its snapshots are aside
                child.kill()
                child.wait()
        finally:
            stop.set()
            watcher.join()
    times = {str(step): t for step, t in sorted(seen.items())}
    atomic.write_json(snaps / "times.json", times)
    first, last = (min(seen), max(seen)) if seen else (0, 0)
    rate = (seen[last] - seen[first]) / (last - first) if last > first else None  # start-up excluded
    record = {"overrides": values, "train_gan": trained_settings(args, work, name), "every": every, "budget_s": budget, "steps_reached": last,
              "first_snapshot_s": round(seen[first], 2) if seen else None, "s_per_step": rate and round(rate, 4)}
    atomic.write_json(work / name / "run.json", record)  # written last: the run is complete
    return record


def finished_run(args: argparse.Namespace, work: Path, name: str) -> dict | None:
    """The record of a completed run of recipe `name` with this budget and these resolved settings
    (a changed shipped recipe trains "ours" again), or None."""
    path = work / name / "run.json"
    record = json.loads(path.read_text()) if path.is_file() else None
    if (record and record["overrides"] == RECIPES[name][0] and record["budget_s"] == budget_s(args, name)
            and record.get("train_gan") == trained_settings(args, work, name)):
        return record
    return None


def _generator(cfg, shape: tuple[int, int, int], num_classes: int) -> torch.nn.Module:
    tg = cfg.train_gan
    G, _ = GAN_ARCHS[tg.arch].build(shape, num_classes, tg.z_dim, tg.size, tg.width)
    return G.eval().requires_grad_(False)


@torch.no_grad()
def score_snapshots(args: argparse.Namespace, name: str, work: Path, train, judge, real: dict[int, np.ndarray],
                    grid: Path) -> list[dict]:
    """Each snapshot of recipe `name` scored by the referee against `real` (`real_features` of the
    training split: per class agreement and recall); the last snapshot's samples drawn into `grid`."""
    cfg = with_recipe(params_file.load(args.params, _recipe_overrides(args, work, name)))
    h, w, c = train.image_shape
    G = _generator(cfg, (c, h, w), train.num_classes)
    classes = sorted(real)
    z = torch.randn((SAMPLES * len(classes), cfg.train_gan.z_dim), generator=make_generator(NOISE_SEED))
    y = torch.tensor(classes).repeat_interleave(SAMPLES)
    snaps = work / name / "snapshots"
    times = json.loads((snaps / "times.json").read_text())
    curve, x = [], None
    for step, seconds in sorted(((int(s), t) for s, t in times.items())):
        G.load_state_dict(torch.load(snaps / f"step-{step}.pt", map_location="cpu", weights_only=True)["g_ema"])
        x = torch.cat([G(z[i : i + 500], y[i : i + 500]).float() for i in range(0, len(z), 500)])
        curve.append(curve_point(step, seconds, *assess(judge, x, y, classes, real)))
    if x is not None:
        _save_grid(x, y, classes, grid)
    return curve


@torch.no_grad()
def real_ceiling(judge, real: dict[int, np.ndarray], test) -> dict:
    """The same figures with up to SAMPLES real test images per class in place of the samples (a
    seeded subset): what a generator that drew new images of the true distribution would score,
    so the bars can be read against it (k-NN recall of one finite sample by another is below 1)."""
    classes = sorted(real)
    rng = np.random.default_rng(NOISE_SEED)
    rows = [np.sort(rng.permutation(np.flatnonzero(test.labels == c))[:SAMPLES]) for c in classes]
    idx = np.concatenate(rows)
    x, y = to_float(test.images[idx]), torch.from_numpy(test.labels[idx])
    agreement, recall = assess(judge, x, y, classes, real)
    return {k: v for k, v in curve_point(0, 0.0, agreement, recall).items() if k not in ("step", "seconds")}


def _save_grid(x: torch.Tensor, y: torch.Tensor, classes: list[int], path: Path, per_class: int = 10) -> None:
    """A PNG of `per_class` samples per class, one row per class."""
    from PIL import Image
    from torchvision.utils import make_grid

    rows = torch.cat([x[y == c][:per_class] for c in classes])
    grid = make_grid(rows, nrow=per_class, padding=1, pad_value=-1.0)  # (C, H, W) in [-1, 1]
    u8 = to_uint8(grid[None])[0].numpy()  # (H, W, C)
    with atomic.atomic_path(path) as tmp:
        Image.fromarray(u8[..., 0] if u8.shape[-1] == 1 else u8).save(tmp, format="PNG")


def plot(result: dict, path: Path) -> None:
    """Worst-class agreement and worst-class recall against wall minutes, one line per recipe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, r in result["recipes"].items():
        t = [c["seconds"] / 60 for c in r["curve"]]
        axes[0].plot(t, [c["worst_agreement"] for c in r["curve"]], label=name)
        line = axes[1].plot(t, [c["worst_recall"] for c in r["curve"]], label=f"{name} worst class")[0]
        axes[1].plot(t, [c["mean_recall"] for c in r["curve"]], ls=":", color=line.get_color(), label=f"{name} mean")
    axes[0].axhline(AGREEMENT_BAR, color="grey", lw=0.8)
    for bar in result["recall_bars"]:
        axes[1].axhline(bar, color="grey", lw=0.8)
    if result.get("real_ceiling"):
        axes[1].axhline(result["real_ceiling"]["worst_recall"], color="black", ls="--", lw=0.8,
                        label="real test images, worst class")
    axes[0].set(xlabel="wall minutes since `augment train-gan` started", ylabel="worst-class agreement", ylim=(0, 1.01))
    axes[1].set(xlabel="wall minutes since `augment train-gan` started", ylabel="recall", ylim=(0, 1.01))
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--long-tail", required=True, help="as outcome.py: deepsmote | rho=<ratio> | natural")
    p.add_argument("--out", required=True)
    p.add_argument("--minutes", type=float, default=12.0, help="wall budget of each of our recipes")
    p.add_argument("--reference-minutes", type=float, default=None, help="the reference's budget (default --minutes)")
    p.add_argument("--every", type=int, default=None, help="steps between snapshots (default: per recipe)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the training child")
    p.add_argument("--recall-bar", type=float, nargs="+", default=[0.6, 0.7])
    p.add_argument("--recipes", nargs="+", default=["ours", "reference"], choices=list(RECIPES))
    p.add_argument("--params", default=str(REPO / "params.yaml"))
    p.add_argument("--workdir", default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="on top of every recipe")
    args = p.parse_args(argv)
    args.reference_minutes = args.reference_minutes or args.minutes
    logging.basicConfig(level=logging.INFO, format="augment: %(message)s", stream=sys.stderr)
    out = Path(args.out)
    work = Path(args.workdir or HERE / "work" / out.stem).resolve()
    result = json.loads(out.read_text()) if out.is_file() else {}
    result.update({"command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]), "machine": machine_info(),
                   "code": code_version(), "dataset": Path(args.data).name, "long_tail": args.long_tail,
                   "threads": args.threads, "agreement_bar": AGREEMENT_BAR, "recall_bars": args.recall_bar,
                   "samples_per_class": SAMPLES})
    cfg = params_file.load(args.params, _overrides(args, work))
    stage("prepare")(cfg)
    train = read_prepared(cfg, "train")
    src = read_source(str(Path(args.data).resolve()), ImageSpec())
    judge, on_real = speed._judge(src.train, src.test, work)
    judge.eval()
    result["judge_on_real_test"] = on_real
    real = real_features(judge, train, list(range(train.num_classes)), seed=0)  # every recipe's reference
    result["real_ceiling"] = real_ceiling(judge, real, src.test)
    recipes = result.setdefault("recipes", {})
    for name in args.recipes:
        recipes[name] = finished_run(args, work, name) or train_for(args, name, work)
        recipes[name]["grid"] = f"{out.stem}_{name}.png"
        recipes[name]["curve"] = score_snapshots(args, name, work, train, judge, real, out.parent / recipes[name]["grid"])
        recipes[name]["seconds_to_bar"] = {str(b): first_time(recipes[name]["curve"], b) for b in args.recall_bar}
        atomic.write_json(out, result)
        last = recipes[name]["curve"][-1] if recipes[name]["curve"] else {}
        print(f"{name}: {recipes[name]['steps_reached']} steps; last worst agreement {last.get('worst_agreement')}, "
              f"worst recall {last.get('worst_recall')}; seconds to bar {recipes[name]['seconds_to_bar']}", flush=True)
    plot(result, out.with_suffix(".png"))
    atomic.write_json(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
