"""GAN ablation: the limited-data techniques of `train_gan`, each switched on alone against the
recipe, on one long-tailed dataset, judged by the tracker (per-class judge agreement and recall
of 100 EMA samples at every `sample_every` step; `pipeline.gan_tracking`).

    python benchmarks/gan_ablation.py --data ../shared/datasets/usps --long-tail rho=100 \
        --out benchmarks/results/gan_ablation_usps_lt.json [--steps 2000] [--variants base lecam ...]

Each variant trains in its own folder under --workdir and is recorded as soon as it ends, so a
stopped run resumes with the variants still missing. Per variant: the last evaluation's and the
best evaluation's worst-class and mean agreement, mean and worst-class recall, the first step at which
every class reaches agreement >= 0.98 and recall >= --recall-bar, and seconds per step.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import outcome  # noqa: E402
from machine import code_version, machine_info  # noqa: E402

from pipeline import atomic, params_file  # noqa: E402
from pipeline.gan_visuals import diversity_at_end  # noqa: E402
from pipeline.stages import stage  # noqa: E402

# name -> train_gan overrides on top of the recipe (each technique alone)
VARIANTS = {
    "base": {},
    "lecam": {"train_gan.lecam_weight": 0.3},
    "ada": {"train_gan.ada_target": 0.6},
    "transition": {"train_gan.transition_start": 200, "train_gan.transition_steps": 800},
    "n_dis2": {"train_gan.n_dis": 2},
    "gsr": {"train_gan.gsr_weight": 0.5},
    # NoisyTwins' embedding noise at half and at the size of the recipe's between-class spread of
    # the cBN gains and biases (std over classes ~0.1 in the 4,000-step MNIST-LT generator)
    "embed_noise_0.05": {"train_gan.embed_noise": 0.05},
    "embed_noise_0.1": {"train_gan.embed_noise": 0.1},
    # the two that raised recall on USPS-LT (gan_ablation_usps_lt.json), together
    "ada+n_dis2": {"train_gan.ada_target": 0.6, "train_gan.n_dis": 2},
    # a weaker AC-GAN class loss: its cross-entropy rewards the most typical image of a class (the
    # referee gives the recipe's samples agreement 1.000, above real images' 0.97-0.99)
    "aux_0.3": {"train_gan.aux_weight": 0.3},
    "aux_0.1": {"train_gan.aux_weight": 0.1},
    # MSGAN's mode-seeking term at the paper's weight
    "ms_1": {"train_gan.ms_weight": 1.0},
    "ms_0.3": {"train_gan.ms_weight": 0.3},
    "ms_0.1": {"train_gan.ms_weight": 0.1},
    # TAC-GAN's twin class head, which cancels the class loss's pull towards typical images
    "tac": {"train_gan.aux_twin": True},
    "tac+ms_1": {"train_gan.aux_twin": True, "train_gan.ms_weight": 1.0},
    # BigGAN's shared class embedding and hierarchical latents in place of per-class BatchNorm
    # embeddings (the recipe's settings kept: pipeline.recipes.RECIPE_ARCHS)
    "hier": {"train_gan.arch": "sngan_hier"},
}
AGREEMENT_BAR = 0.98


def first_passing(curve: list[dict], recall_bar: float) -> dict | None:
    """The first point of `curve` (each with worst_agreement and worst_recall) where every class
    has agreement >= AGREEMENT_BAR and recall >= `recall_bar`; None if none does."""
    return next((c for c in curve if c["worst_agreement"] >= AGREEMENT_BAR and c["worst_recall"] >= recall_bar), None)


def summarize(quality: torch.Tensor, recall_bar: float) -> dict:
    """quality rows (step, class, agreement, recall) -> per-evaluation worst/mean figures and the
    first step where every class passes both bars (None if never)."""
    by_step: dict[int, list[tuple[float, float]]] = {}
    for step, _, agreement, recall in quality.tolist():
        by_step.setdefault(int(step), []).append((agreement, recall))
    curve = [{"step": s, "worst_agreement": min(a for a, _ in rows), "mean_agreement": sum(a for a, _ in rows) / len(rows),
              "mean_recall": sum(r for _, r in rows) / len(rows), "worst_recall": min(r for _, r in rows)}
             for s, rows in sorted(by_step.items())]
    first = first_passing(curve, recall_bar)
    return {"curve": curve, "last": curve[-1], "steps_to_bar": first and first["step"]}


def run_variant(args: argparse.Namespace, name: str, work: Path) -> dict:
    overrides = {
        "data.source": str(Path(args.data).resolve()), **outcome.profile_overrides(args.long_tail),
        **outcome.workdir_paths(work), "paths.gan": str(work / name / "gan"),
        "train_gan.steps": args.steps, "train_gan.track_quality": True,
        "train_gan.checkpoint_every": 500, "train_gan.sample_every": args.sample_every,
        "train_gan.cpu_threads": args.threads,
        **dict(params_file.parse_override(o) for o in args.set), **VARIANTS[name],
    }
    cfg = params_file.load(args.params, overrides)
    stage("prepare")(cfg)
    start = time.perf_counter()
    final = stage("train_gan")(cfg)
    seconds = time.perf_counter() - start
    payload = torch.load(Path(cfg.paths.gan) / "final.pt", map_location="cpu", weights_only=True)
    del final
    return {"overrides": VARIANTS[name], "train_s": round(seconds, 1), "s_per_step": round(seconds / args.steps, 4),
            "best_step": payload.get("best_step"), **summarize(payload["quality"], args.recall_bar),
            "diversity_at_end": diversity_at_end(cfg.paths.gan, payload["class_names"])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--long-tail", required=True, help="as outcome.py: deepsmote | rho=<ratio> | natural")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--sample-every", type=int, default=250)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the weights depend on the count)")
    p.add_argument("--recall-bar", type=float, default=0.6)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--params", default=str(HERE.parent / "params.yaml"))
    p.add_argument("--workdir", default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="on top of every variant")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="augment: %(message)s", stream=sys.stderr)
    out = Path(args.out)
    work = Path(args.workdir or HERE / "work" / out.stem).resolve()
    result = json.loads(out.read_text()) if out.is_file() else {}
    result.update({"command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]), "machine": machine_info(),
                   "code": code_version(), "steps": args.steps, "recall_bar": args.recall_bar})
    variants = result.setdefault("variants", {})
    for name in args.variants:
        final = work / name / "gan" / "final.pt"
        if name in variants and variants[name].get("overrides") == VARIANTS[name]:
            if final.is_file():  # summarised again from its final.pt, so a new figure reaches old runs
                payload = torch.load(final, map_location="cpu", weights_only=True)
                variants[name].update(summarize(payload["quality"], args.recall_bar),
                                      diversity_at_end=diversity_at_end(final.parent, payload["class_names"]))
            continue
        variants[name] = run_variant(args, name, work)
        atomic.write_json(out, result)
        last = variants[name]["last"]
        print(f"{name}: worst agreement {last['worst_agreement']:.3f}, recall mean {last['mean_recall']:.3f} "
              f"worst {last['worst_recall']:.3f}; bar at step {variants[name]['steps_to_bar']}; collapsed at the end: "
              f"{(variants[name]['diversity_at_end'] or {}).get('collapsed')}", flush=True)
    atomic.write_json(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
