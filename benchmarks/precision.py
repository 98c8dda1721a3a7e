"""Precision benchmark: fp32 against bf16 on this machine, for the three places augment uses
`precision` (train_gan and evaluate: autocast; generate: the generator's weights in bf16), plus
what `auto` resolves to here.

    python benchmarks/precision.py [--seconds 2] [--rounds 3] [--out benchmarks/results/precision.json]
        [--gan final.pt ...]   (also: how far bf16 moves a trained generator's pixels from fp32)

Each figure is the best of `--rounds` steady rates over `--seconds` (after a warm-up, fp32 and bf16
taking turns, so a slow spell of a shared machine does not fall on one precision only), on random
inputs:
  gan_step       one sngan G+D hinge step at 28x28, width 16, batch 64 (steps/s)
  generator      the EMA generator's eval forward at 28x28 and 32x32x3, width 16, batch 256 (images/s),
                 as `generate` runs it (`pipeline.generate.class_forward`: one class per batch,
                 sngan fused per class, weights and activations in the precision)
  classifier     one small_cnn Adam step at 28x28, batch 32, on one thread (images/s)
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))


def _rate(fn, seconds: float, per_call: int, warmup: int = 3) -> float:
    """Calls of `fn` per second x `per_call`, after `warmup` warm-up calls."""
    for _ in range(warmup):
        fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return per_call * n / (time.perf_counter() - t0)


def _best_rates(fns: dict, seconds: float, per_call: int, rounds: int, warmup: int = 3) -> dict:
    """{name: best rate of `rounds`} for each callable of `fns`, the callables taking turns."""
    best = {name: 0.0 for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = max(best[name], _rate(fn, seconds, per_call, warmup))
    return {name: round(r, 1) for name, r in best.items()}


def measure(seconds: float, rounds: int, warmup: int = 3) -> dict:
    import torch
    import torch.nn.functional as F

    from pipeline.device import autocast, choose_precision, precision_name, prepare_module
    from pipeline.generate import class_forward
    from pipeline.losses import LOSSES
    from pipeline.models import GAN_ARCHS
    from pipeline.models.classifiers import build_classifier

    cpu = torch.device("cpu")
    dtypes = {"fp32": None, "bf16": torch.bfloat16}
    out: dict = {"auto": precision_name(choose_precision("auto", cpu)), "rounds": rounds, "warmup": warmup}

    G, D = (prepare_module(m, cpu) for m in GAN_ARCHS["sngan"].build((1, 28, 28), 10, 64, "light", 16))
    loss, B = LOSSES["hinge"], 64
    real = (torch.rand(B, 1, 28, 28) * 2 - 1).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (B,))

    def gan_step(dtype):
        def step():
            with autocast(cpu, dtype):
                fake = G(torch.randn(B, 64), y)
                d = loss.d_loss(D(real, y).float(), D(fake.detach(), y).float())
            d.backward()
            with autocast(cpu, dtype):
                g = loss.g_loss(D(fake, y).float())
            g.backward()
        return step

    out["gan_step_per_s"] = _best_rates({n: gan_step(d) for n, d in dtypes.items()}, seconds, 1, rounds, warmup)

    out["generator_img_per_s"] = {}
    for shape in ((1, 28, 28), (3, 32, 32)):
        gen = prepare_module(GAN_ARCHS["sngan"].build(shape, 10, 64, "light", 16)[0], cpu).eval()
        z, yy = torch.randn(256, 64), torch.full((256,), 3)  # generate's batches hold one class
        key = "x".join(map(str, shape[1:] + shape[:1]))

        def forward(dtype, gen=gen, z=z, yy=yy):
            g = class_forward(gen, 3, dtype)  # as `generate` runs it: fused, in dtype

            def run():
                with torch.inference_mode():
                    g(z, yy)
            return run

        out["generator_img_per_s"][key] = _best_rates({n: forward(d) for n, d in dtypes.items()}, seconds, 256, rounds, warmup)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as evaluate runs its classifiers (evaluate.cpu_threads: 1)
    try:
        model = prepare_module(build_classifier("small_cnn", (1, 28, 28), 10, torch.Generator().manual_seed(0)), cpu)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x = torch.randn(32, 1, 28, 28).contiguous(memory_format=torch.channels_last)
        t = torch.randint(0, 10, (32,))

        def train_step(dtype):
            def run():
                with autocast(cpu, dtype):
                    logits = model(x)
                step_loss = F.cross_entropy(logits.float(), t)
                opt.zero_grad(set_to_none=True)
                step_loss.backward()
                opt.step()
            return run

        out["classifier_img_per_s"] = _best_rates({n: train_step(d) for n, d in dtypes.items()}, seconds, 32, rounds, warmup)
    finally:
        torch.set_num_threads(threads)
    return out


def pixel_change(path: str, per_class: int = 300) -> dict:
    """Pixels of a trained GAN's samples in bf16 against fp32: the same seeds, `per_class` per class."""
    import numpy as np
    import torch

    from pipeline.gan_checkpoints import load_generator
    from pipeline.generate import Sampler, generate

    G, meta = load_generator(Path(path))
    plan = {name: per_class for name in meta["class_names"]}
    a, b = (generate(Sampler(G, meta, seed=0, dtype=d), plan, batch_size=256, progress=False)[0].astype(np.int16)
            for d in (None, torch.bfloat16))
    d = np.abs(a - b)
    return {"image_shape": meta["image_shape"], "images": int(len(a)), "fraction_moved": round(float((d > 0).mean()), 4),
            "fraction_moved_more_than_one": round(float((d > 1).mean()), 5), "mean_levels": round(float(d.mean()), 4),
            "max_levels": int(d.max())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=2.0, help="measuring time per figure and round")
    p.add_argument("--rounds", type=int, default=3, help="rounds per figure; the best is kept")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before each round's timing")
    p.add_argument("--out", default=str(HERE / "results" / "precision.json"))
    p.add_argument("--gan", action="append", default=[], metavar="FINAL_PT",
                   help="a trained final.pt whose bf16 pixels are compared with its fp32 ones (repeatable)")
    args = p.parse_args(argv)
    from machine import machine_info

    from pipeline import atomic

    result = {"command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
              "machine": machine_info(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              **measure(args.seconds, args.rounds, args.warmup)}
    if args.gan:
        result["pixel_change"] = {path: pixel_change(path) for path in args.gan}
    atomic.write_json(args.out, result)
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
