"""Speed benchmark, all parts in ONE run on one machine, each part in its own process (own peak RSS):

  gan_train   images/s of our default GAN recipe vs the tutorial-style `concat` reference (fp32, BCE,
              Adam 2e-4/0.5), each trained for the same wall time, with the class consistency its EMA
              samples reach (a judge trained on the full real training set labels them)
  generate    generator -> finished Parquet shards vs a per-file torchvision `save_image` loop,
              at 28x28x1 and 32x32x3, best of --rounds interleaved rounds
  demo        `augment run` on the built-in default (what `make demo` runs after install)
  flops       achieved GAN-training FLOP/s against this machine's measured fp32/bf16 matmul peak

  --resume    after a failure, reads the parts an earlier run with the same arguments finished in
              --workdir (their results are kept there, with their arguments) and measures the rest

  --rescore   re-judges the two final.pt of an earlier gan_train run in --workdir with today's judge
              and updates --out in place: the images/s stay those measured; the earlier class
              consistency is kept under gan_train.rescored.previous

    python benchmarks/speed.py [--data ../shared/datasets/mnist] [--seconds 240] [--out benchmarks/results/speed.json]
        [--set train_gan.KEY=VALUE ...]   (our recipe for gan_train: params.yaml plus these)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))


# ---- parts (each runs in a child process: `speed.py --part NAME --part-out FILE`) ----------------

def _mnist_lt(data: Path):
    from pipeline.data import impose_long_tail, long_tail_counts
    from pipeline.sources import ImageSpec, read_source

    src = read_source(str(data), ImageSpec())
    target = long_tail_counts(src.train.counts(), "deepsmote") if src.train.num_classes == 10 else None
    lt = impose_long_tail(src.train, target, seed=0) if target else src.train
    return src.train, src.test, lt


# the tutorial-style cGAN (train_gan values over ours): the reference of the speed and
# time-to-quality benchmarks
REFERENCE = {
    "arch": "concat", "loss": "bce", "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999,
    "diffaug": "", "balanced_sampling": False, "precision": "fp32", "ema_warmup": 0, "n_dis": 1,
    "aux_weight": 0.0, "size": "light", "width": None,  # the tutorial's own MLP widths
    "ema_decay": 0.0,  # no EMA in the tutorial: sample its raw G (an EMA without warm-up would handicap it)
}


# the held-out images of the referee (its recipe is pipeline.judge.JUDGES["referee"]); 4 epochs
# (until 2026-11-23) left it at 98.2% test accuracy, 95.6% on real 9s
HELD_OUT = 5000


def _judge_recipe() -> dict:
    """The referee's recipe as the results record it (and as its cache is keyed)."""
    from pipeline.judge import JUDGES

    referee = JUDGES["referee"]
    return {**referee.settings, "augment": referee.augment, "held_out": HELD_OUT}


def _judge(full_train, test, workdir: Path):
    """The referee of class consistency (`pipeline.judge.JUDGES["referee"]`): a small CNN trained on
    the full real training set (HELD_OUT images held out to pick its epoch), with classic
    augmentation. Cached in the workdir for this data and recipe; returns (judge, its accuracy on the
    real test set, overall and per class: the ceiling of any agreement figure)."""
    from pipeline.config import EvaluateConfig
    from pipeline.data import stratified_split
    from pipeline.training import predict
    from pipeline.data import data_fingerprint
    from pipeline.judge import cached_judge, fit_judge

    import torch

    recipe = _judge_recipe()

    def fit():
        train, val = stratified_split(full_train, min(0.2, HELD_OUT / len(full_train)), seed=0)
        cfg = EvaluateConfig(gan_quality=False, device="cpu", cpu_threads=torch.get_num_threads())
        return fit_judge("referee", train, val, cfg, seed=0)

    # keyed by the data and the recipe: a reused workdir never hands back a stale judge
    key = data_fingerprint(full_train) + json.dumps(recipe, sort_keys=True)
    judge = cached_judge(workdir / "judge.pt", key, full_train, fit)
    pred = predict(judge, test.images)
    names = full_train.class_names
    ceiling = {n: float((pred[test.labels == c] == c).mean()) for c, n in enumerate(names)}
    return judge, {"test_accuracy": float((pred == test.labels).mean()), "per_class": ceiling, "recipe": recipe}


def _class_consistency(final: Path, judge, per_class: int = 200) -> dict:
    from pipeline.training import predict
    from pipeline.gan_checkpoints import load_generator
    from pipeline.generate import Sampler, generate

    G, meta = load_generator(final)
    plan = {n: per_class for n in meta["class_names"]}
    images, labels, _, _ = generate(Sampler(G, meta, seed=123), plan, batch_size=256, progress=False)
    pred = predict(judge, images)
    per = {n: float((pred[labels == c] == c).mean()) for c, n in enumerate(meta["class_names"])}
    return {"overall": float((pred == labels).mean()), "min": min(per.values()), "per_class": per}


def part_gan_train(args) -> dict:
    """Same wall time for both recipes; images/s and the class consistency reached."""
    from pipeline.gan import train_gan

    full, test, lt = _mnist_lt(Path(args.data))
    judge, judge_real = _judge(full, test, Path(args.workdir))
    ours = _recipe(args)
    reference = ours.model_copy(update=REFERENCE)
    out = {}
    for name, cfg in (("augment", ours), ("reference", reference)):
        # seconds per step = (time of 30 steps - time of 10 steps) / 20: the fixed cost of a run
        # (building, sample grids, final.pt) cancels, so the budget is not under-spent
        took = {}
        for n in (10, 30):
            calib = cfg.model_copy(update={"steps": n, "checkpoint_every": 10_000, "sample_every": 10_000})
            t0 = time.perf_counter()
            train_gan(calib, lt, Path(args.workdir) / f"{name}-calib-{n}", progress=False)
            took[n] = time.perf_counter() - t0
        per_step = (took[30] - took[10]) / 20 if took[30] > took[10] else took[30] / 30
        steps = max(20, int(args.seconds / per_step))
        run = cfg.model_copy(update={"steps": steps, "checkpoint_every": steps, "sample_every": steps})
        t0 = time.perf_counter()
        final = train_gan(run, lt, Path(args.workdir) / name, progress=False)
        wall = time.perf_counter() - t0
        out[name] = {"arch": cfg.arch, "loss": cfg.loss, "steps": steps, "batch_size": cfg.batch_size,
                     "recipe": cfg.model_dump(mode="json", exclude={"steps", "checkpoint_every", "sample_every"}),
                     "wall_s": round(wall, 1), "img_per_s": round(steps * cfg.batch_size / wall, 1),
                     "class_consistency": _class_consistency(final, judge)}
    return {
        "augment_img_per_s": out["augment"]["img_per_s"],
        "reference_img_per_s": out["reference"]["img_per_s"],
        "augment_class_consistency": out["augment"]["class_consistency"]["overall"],
        "reference_class_consistency": out["reference"]["class_consistency"]["overall"],
        "dataset": f"{Path(args.data).name} deepsmote long-tail", "seconds_budget": args.seconds, "runs": out,
        "judge_on_real_test": judge_real,
    }


def part_gan_rescore(args) -> dict:
    """The class consistency of the final.pt that the gan_train run described by --out left in
    the workdir; a final.pt of another run (other step count) is refused before any work."""
    import torch

    described = json.loads(Path(args.out).read_text())["gan_train"]["runs"]
    finals = {name: Path(args.workdir) / name / "final.pt" for name in ("augment", "reference")}
    for name, final in finals.items():
        steps = int(torch.load(final, map_location="cpu", weights_only=True)["step"])
        if steps != described[name]["steps"]:
            raise SystemExit(f"error: {final} has {steps} steps, {args.out} says {described[name]['steps']}: "
                             "not the run that file describes")
    full, test, _ = _mnist_lt(Path(args.data))
    judge, judge_real = _judge(full, test, Path(args.workdir))
    return {"runs": {name: _class_consistency(final, judge) for name, final in finals.items()},
            "judge_on_real_test": judge_real}


def rescore(result: dict, data: dict) -> dict:
    """`result` (an earlier speed.json) with gan_train's class consistency replaced by `data`'s
    (part_gan_rescore), the replaced figures kept under gan_train.rescored.previous."""
    g = result["gan_train"]
    previous = {"judge_on_real_test": g.get("judge_on_real_test"),
                **{name: g["runs"][name]["class_consistency"] for name in data["runs"]}}
    for name, consistency in data["runs"].items():
        g["runs"][name]["class_consistency"] = consistency
        g[f"{name}_class_consistency"] = consistency["overall"]
    g["judge_on_real_test"] = data["judge_on_real_test"]
    g["rescored"] = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "previous": previous}
    return result


def _params(args):
    """params.yaml with the command line's --set overrides, validated."""
    from pipeline import params_file

    return params_file.load(REPO / "params.yaml", dict(params_file.parse_override(o) for o in args.set))


def _recipe(args):
    """Our GAN recipe: the train_gan section of `_params`."""
    return _params(args).train_gan


def _generator(args, shape, num_classes: int, arch: str | None = None):
    """An untrained generator of our recipe (or of `arch` at its own light size) in eval mode."""
    import torch

    from pipeline.device import prepare_module
    from pipeline.models import GAN_ARCHS

    cfg = _recipe(args)
    if arch is not None:
        cfg = cfg.model_copy(update={"arch": arch, "size": "light", "width": None, "aux_weight": 0.0})
    G, _ = GAN_ARCHS[cfg.arch].build(shape, num_classes, cfg.z_dim, cfg.size, cfg.width)
    meta = {"z_dim": cfg.z_dim, "image_shape": list(shape), "class_names": [str(i) for i in range(num_classes)],
            "num_classes": num_classes, "arch": cfg.arch, "sha256": "0" * 64}
    return prepare_module(G, torch.device("cpu")).eval(), meta  # as pipeline.gan_checkpoints.load_generator does


def _generator_flops(G, meta) -> float:
    """FLOPs of one generated image (torch's FlopCounterMode over a batch of 8)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        G(torch.randn(8, meta["z_dim"]), torch.zeros(8, dtype=torch.long))
    return counter.get_total_flops() / 8


def _per_file_loop(G, meta, n: int, folder: Path, batch: int = 256) -> tuple[float, float]:
    """The tutorial way: generate a batch, then one `save_image` call per image.

    Returns (images/s of the whole loop, the share of its time spent in `save_image`).
    """
    import torch
    from torchvision.utils import save_image

    from pipeline.generate import sample_noise

    folder.mkdir(parents=True, exist_ok=True)
    k = meta["num_classes"]
    saving = 0.0
    t0 = time.perf_counter()
    with torch.no_grad():
        for start in range(0, n, batch):
            idx = list(range(start, min(n, start + batch)))
            z = sample_noise(idx, meta["z_dim"])
            y = torch.tensor([i % k for i in idx])
            x = G(z, y)
            t_save = time.perf_counter()
            for i, img in zip(idx, x):
                save_image(img * 0.5 + 0.5, folder / f"{i}.png")
            saving += time.perf_counter() - t_save
    total = time.perf_counter() - t0
    return n / total, saving / total


def part_generate(args) -> dict:
    """Each shape: `--rounds` rounds, each timing the shards path then the per-file loop; the best
    rate of each is kept (a slow spell of a shared machine then does not fall on one side only)."""
    import torch

    from pipeline.device import choose_precision, precision_name
    from pipeline.data import ImageTable
    from pipeline.generate import Sampler, generate
    from pipeline.release import write_shards

    # generate.precision as the pipeline resolves it (params.yaml plus --set), recorded per row
    dtype = choose_precision(_params(args).generate.precision, torch.device("cpu"))

    out = {}
    # our recipe's generator at both shapes, then the tutorial MLP generator (about 1 MFLOP/image):
    # with a near-free generator the row shows what the pipeline itself (noise, PNG, Parquet) sustains
    for shape, arch in (((1, 28, 28), None), ((3, 32, 32), None), ((1, 28, 28), "concat")):
        key = "x".join(map(str, shape[1:] + shape[:1])) + (f" ({arch} generator)" if arch else "")
        G, meta = _generator(args, shape, 10, arch)
        n = args.images
        plan = {c: n // 10 for c in meta["class_names"]}
        best = {"total": float("inf"), "gen": float("inf"), "write": float("inf"), "per_file": 0.0}
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
                t0 = time.perf_counter()
                images, labels, seeds, scores = generate(Sampler(G, meta, seed=0, dtype=dtype), plan,
                                                         batch_size=1024, progress=False)
                t_gen = time.perf_counter() - t0
                write_shards(Path(tmp) / "shards", ImageTable(images, labels, meta["class_names"]),
                             {"source": "synthetic", "generator": meta["sha256"], "seed": seeds, "score": scores},
                             shard_size=10_000, manifest_extra={})
                total = time.perf_counter() - t0
                rate, saving = _per_file_loop(G, meta, min(n, 5000), Path(tmp) / "files")
                if rate > best["per_file"]:
                    best["per_file"], best["per_file_saving"] = rate, saving
            best["total"], best["gen"] = min(best["total"], total), min(best["gen"], t_gen)
            best["write"] = min(best["write"], total - t_gen)
        rows = len(labels)
        out[key] = {"images": int(rows), "rounds": args.rounds, "shards_img_per_s": round(rows / best["total"], 1),
                    "generator_only_img_per_s": round(rows / best["gen"], 1),
                    "writer_only_img_per_s": round(rows / best["write"], 1),
                    "per_file_img_per_s": round(best["per_file"], 1),
                    "per_file_save_image_share": round(best["per_file_saving"], 3),
                    "speedup": round(rows / best["total"] / best["per_file"], 2),
                    "precision": precision_name(dtype), "per_file_precision": "fp32",
                    "generator_mflop_per_image": round(_generator_flops(G, meta) / 1e6, 2)}
    return {"shards_img_per_s": out["28x28x1"]["shards_img_per_s"],
            "per_file_img_per_s": out["28x28x1"]["per_file_img_per_s"], "by_shape": out}


def part_demo(args) -> dict:
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "-q", "--params", str(REPO / "params.yaml")],
                       cwd=tmp, check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
        return {"demo_seconds": round(time.perf_counter() - t0, 1)}


def _matmul_peak(dtype, n: int = 1024, repeats: int = 5) -> float:
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t0)


def part_flops(args) -> dict:
    """FLOPs of one training step counted by torch's FlopCounterMode, over the measured step time."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.losses import LOSSES
    from pipeline.models import GAN_ARCHS

    cfg = _recipe(args)
    G, D = GAN_ARCHS[cfg.arch].build((1, 28, 28), 10, cfg.z_dim, cfg.size, cfg.width)
    loss = LOSSES[cfg.loss]
    B = cfg.batch_size
    real, y = torch.rand(B, 1, 28, 28) * 2 - 1, torch.randint(0, 10, (B,))

    def step():
        fake = G(torch.randn(B, cfg.z_dim), y)
        d = loss.d_loss(D(real, y), D(fake.detach(), y))
        d.backward()
        g = loss.g_loss(D(fake, y))
        g.backward()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    step()
    t0 = time.perf_counter()
    for _ in range(10):
        step()
    per_step = (time.perf_counter() - t0) / 10
    fp32, bf16 = _matmul_peak(torch.float32), _matmul_peak(torch.bfloat16)
    achieved = flops / per_step
    return {"train_step_flops": flops, "achieved_flop_per_s": round(achieved), "fp32_matmul_peak": round(fp32),
            "bf16_matmul_peak": round(bf16), "fraction_of_fp32_peak": round(achieved / fp32, 3),
            "note": "one G+D step at 28x28, batch %d, fp32, counted by torch.utils.flop_counter" % B}


PARTS = {"gan_train": part_gan_train, "generate": part_generate, "demo": part_demo, "flops": part_flops,
         "gan_rescore": part_gan_rescore}
# the arguments each part reads: --resume reuses a part's result when these are the same
PART_READS = {"gan_train": ("data", "seconds", "set"), "generate": ("images", "rounds", "set"), "demo": (),
              "flops": ("set",), "gan_rescore": ("data", "set")}
# what a plain run measures; gan_rescore only runs under --rescore (it re-judges an earlier run's GANs)
MEASURED = ("gan_train", "generate", "demo", "flops")


def _child(args) -> int:
    import torch

    torch.manual_seed(0)
    result = PARTS[args.part](args)
    from machine import code_version, peak_rss_mb

    result["peak_rss_mb"] = peak_rss_mb()
    result["code"] = code_version()  # per part: --resume may combine parts measured with other code
    Path(args.part_out).write_text(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "mnist"))
    p.add_argument("--seconds", type=float, default=240.0, help="GAN training wall time per recipe")
    p.add_argument("--images", type=int, default=20_000, help="images per generation measurement")
    p.add_argument("--rounds", type=int, default=3, help="generate: rounds per shape, the best of each side kept")
    p.add_argument("--out", default=str(HERE / "results" / "speed.json"))
    p.add_argument("--parts", default=",".join(MEASURED), help=f"comma-separated subset of {','.join(MEASURED)}")
    p.add_argument("--resume", action="store_true",
                   help="read the parts whose result an interrupted run with the same arguments left in --workdir "
                        "instead of measuring them again (listed under resumed_parts)")
    p.add_argument("--workdir", default=None)
    p.add_argument("--set", action="append", default=[], metavar="train_gan.KEY=VALUE",
                   help="override our GAN recipe (params.yaml) for gan_train, e.g. train_gan.width=16")
    p.add_argument("--rescore", action="store_true",
                   help="re-judge the GANs of an earlier gan_train run in --workdir; update --out in place")
    p.add_argument("--part", help=argparse.SUPPRESS)
    p.add_argument("--part-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.part:
        return _child(args)
    from machine import machine_info

    from pipeline import atomic

    if args.rescore and not (args.workdir and Path(args.out).is_file()):
        raise SystemExit("error: --rescore needs the --workdir of the earlier run and its --out file")
    if args.resume and not args.workdir:
        raise SystemExit("error: --resume needs the --workdir of the interrupted run")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="augment-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    result = {"command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
              "machine": machine_info(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    if args.rescore:
        result, args.parts = json.loads(Path(args.out).read_text()), "gan_rescore"
    parts = args.parts.split(",")
    valid = ("gan_rescore",) if args.rescore else MEASURED
    for part in parts:
        if part not in valid:
            raise SystemExit(f"error: unknown part {part!r}; valid: {', '.join(valid)}")
    # a part's arguments, saved beside its result: --resume reuses a result only for the same ones
    part_args = {"data": args.data, "seconds": args.seconds, "images": args.images, "rounds": args.rounds,
                 "set": args.set}

    def same_arguments(part: str, saved: dict) -> bool:  # only those the part reads
        return all(saved.get(k) == part_args[k] for k in PART_READS[part])

    resumed = []
    for part in parts:
        part_out, args_file = work / f"{part}.json", work / f"{part}.args.json"
        if args.resume and part_out.is_file() and args_file.is_file() \
                and same_arguments(part, json.loads(args_file.read_text())):
            print(f"speed: {part}: result of the interrupted run in {work} (--resume)", file=sys.stderr, flush=True)
            resumed.append(part)
        else:
            cmd = [sys.executable, __file__, "--part", part, "--part-out", str(part_out), "--data", args.data,
                   "--seconds", str(args.seconds), "--images", str(args.images), "--rounds", str(args.rounds),
                   "--workdir", str(work),
                   "--out", args.out]
            cmd += [a for o in args.set for a in ("--set", o)]
            print(f"speed: {part} ...", file=sys.stderr, flush=True)
            args_file.unlink(missing_ok=True)
            subprocess.run(cmd, check=True, cwd=REPO)
            atomic.write_json(args_file, part_args)
        data = json.loads(part_out.read_text())
        if part == "gan_train":
            result["gan_train"] = data
        elif part == "gan_rescore":
            result = rescore(result, data)
        elif part == "generate":
            result["generate"] = data
        elif part == "demo":
            result["demo_seconds"], result["demo_peak_rss_mb"] = data["demo_seconds"], data["peak_rss_mb"]
            if "code" in data:
                result["demo_code"] = data["code"]
        else:
            result["flops"] = data
    if resumed:
        result["resumed_parts"] = resumed
    atomic.write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1)[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
