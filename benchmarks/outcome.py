"""Outcome benchmark: the whole pipeline (the same stages as `augment run`) on a folder in the npz
layout with a long-tail profile, writing the metrics.json schema plus how and where it was measured.

    python benchmarks/outcome.py --data ../shared/datasets/mnist --long-tail deepsmote \
        --out benchmarks/results/mnist_lt.json [--seeds 3] [--device auto] [--set key=value ...]

`--synthetic real` puts left-out real images where the GAN's samples go (`real_release.py`): the
ceiling any generator could reach with the same strategies.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shlex
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the pipeline of this checkout, not whichever one the environment's editable install points at (a
# worktree measured with another checkout's .venv would otherwise run that checkout's code)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import TreeMemory, machine_info  # noqa: E402
from real_release import SOURCE_NAME, write_real_release  # noqa: E402

from pipeline import atomic, config, params_file  # noqa: E402
from pipeline.stages import stage  # noqa: E402
from pipeline.stages.files import gan_final_path  # noqa: E402
from pipeline.stages.recipe import with_recipe  # noqa: E402
from pipeline.cli import STAGES  # noqa: E402
from pipeline.errors import AugmentError  # noqa: E402
from pipeline.gan_visuals import diversity_at_end  # noqa: E402
from pipeline.reader import read_manifest  # noqa: E402
from pipeline.recommend import validation_nll  # noqa: E402
from pipeline.strategies import STRATEGIES  # noqa: E402


def profile_overrides(profile: str) -> dict:
    """`deepsmote`, `rho=<ratio>` (exponential), `natural` (the data's own imbalance) or
    `natural=<fraction>` (the data's own imbalance on that share of every class: a smaller run)."""
    if profile == "deepsmote":
        return {"data.long_tail.profile": "deepsmote"}
    if profile == "natural":
        return {"data.long_tail.profile": "none"}
    if profile.startswith("natural="):
        return {"data.long_tail.profile": "fraction", "data.long_tail.fraction": float(profile[8:])}
    if profile.startswith("rho="):
        return {"data.long_tail.profile": "exponential", "data.long_tail.ratio": float(profile[4:])}
    raise SystemExit(f"error: --long-tail {profile!r}: use deepsmote, rho=<ratio>, natural or natural=<fraction>")


def workdir_paths(work: Path) -> dict[str, str]:
    """Every `paths.*` output inside the benchmark's workdir, laid out as `config.Paths` lays out data/
    (data/models/gan -> <work>/models/gan): a benchmark neither writes into nor
    locks the user's data/ (`pipeline.lock`), so two benchmarks with their own workdirs run side by side."""
    return {f"paths.{k}": str(work / Path(f.default).relative_to("data")) for k, f in config.Paths.model_fields.items()}


def build_config(args: argparse.Namespace, work: Path) -> config.Config:
    overrides = {
        "data.source": str(Path(args.data).resolve()),
        "evaluate.seeds": args.seeds,
        "train_gan.device": args.device,
        "evaluate.device": args.device,
        **profile_overrides(args.long_tail),
        **workdir_paths(work),
    }
    overrides.update(dict(params_file.parse_override(o) for o in args.set))
    return params_file.load(args.params, overrides)


def _mtime(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.is_file() else None


def run(cfg: config.Config, skip_done: bool, real: bool = False) -> tuple[dict[str, float], bool]:
    """Every stage in order: (seconds per stage, whether the GAN was trained in this run).

    With `skip_done`, a finished GAN is reused without running train-gan. Without it, train-gan
    runs, but it resumes from the workdir's checkpoints: when they already hold a finished GAN of
    the same settings, nothing is trained, and the run says so rather than time a stage that did
    not train. With `real`, no GAN at all: the release holds left-out real images
    (`real_release.py`, timed as "real-release" in place of train-gan and generate).
    """
    timings = {}
    final = gan_final_path(cfg)
    before = _mtime(final)
    for name, fn_name in STAGES.items():
        if real and name == "train-gan":
            continue
        if real and name == "generate":
            start = time.perf_counter()
            write_real_release(cfg)
            timings["real-release"] = round(time.perf_counter() - start, 1)
            continue
        if skip_done and name == "train-gan" and final.is_file():
            logging.getLogger("augment").info("reusing %s", final)
            continue
        start = time.perf_counter()
        stage(fn_name)(cfg)
        timings[name] = round(time.perf_counter() - start, 1)
    return timings, "train-gan" in timings and (before is None or _mtime(final) != before)


def selection_check(metrics: dict, predictions: pd.DataFrame | None = None) -> dict | None:
    """How the validation-only recommendation fared on the test set (read here, never used to
    choose): the selection regret (the best strategy's test balanced accuracy minus the
    recommended one's; synthetic_only left out, as the recommender leaves it out) and whether the
    recommendation is inside or above the best non-GAN strategy's 95% CI.

    With the predictions table, also the class-balanced validation NLL of every strategy and the
    regret the non-GAN strategy with the lowest one would have had: an alternative selection rule
    measured beside the one in use, so the two can be compared over many runs."""
    rec = (metrics.get("recommendation") or {}).get("strategy")
    if not rec:
        return None
    ba = {n: s["balanced_accuracy"] for n, s in metrics["strategies"].items() if n != "synthetic_only"}
    best = max(ba, key=lambda n: ba[n]["mean"])
    plain = [n for n in ba if not STRATEGIES[n].uses_synthetic]
    best_plain = max(plain, key=lambda n: ba[n]["mean"]) if plain else None
    out = {
        "recommended": rec, "best_on_test": best, "regret": ba[best]["mean"] - ba[rec]["mean"],
        "best_non_gan_on_test": best_plain,
        "not_below_best_non_gan_ci": None if best_plain is None else ba[rec]["mean"] >= ba[best_plain]["ci95"][0],
    }
    if predictions is not None and plain:
        nll = {n: validation_nll(predictions, n) for n in ba}
        pick = min(plain, key=lambda n: (nll[n], plain.index(n)))
        out |= {"validation_nll": nll, "nll_pick": pick, "nll_pick_regret": ba[best]["mean"] - ba[pick]["mean"]}
    return out


def command_line(argv: list[str] | None) -> str:
    """The command that reruns this benchmark: `python <this script> <args>`, also when another
    script (scarcity.py, selection.py) called `main(argv)`, where sys.argv is that script's."""
    script = sys.argv[0] if argv is None else f"benchmarks/{Path(__file__).name}"
    return "python " + " ".join(shlex.quote(a) for a in [script, *(sys.argv[1:] if argv is None else argv)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder with train.npz/test.npz (+ classes.json)")
    p.add_argument("--long-tail", required=True, help="deepsmote | rho=<ratio> | natural | natural=<fraction>")
    p.add_argument("--out", required=True, help="result JSON, e.g. benchmarks/results/mnist_lt.json")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--params", default=None, help="params file (default: the repo's params.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--workdir", default=None, help="where the run's data go (default benchmarks/work/<out name>)")
    p.add_argument("--reuse-gan", action="store_true", help="reuse a finished GAN in the workdir")
    p.add_argument("--synthetic", choices=["gan", "real"], default="gan",
                   help="real: no GAN; the release holds real training images the long-tail profile left out "
                        "(a perfect generator: the ceiling of what synthetic rows can add)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="augment: %(message)s", stream=sys.stderr)
    out = Path(args.out)
    work = Path(args.workdir or Path(__file__).parent / "work" / out.stem).resolve()
    if args.params is None:
        args.params = str(Path(__file__).resolve().parents[1] / "params.yaml")
    start = time.perf_counter()
    try:
        cfg = build_config(args, work)
        with TreeMemory() as memory:
            timings, trained = run(cfg, args.reuse_gan, real=args.synthetic == "real")
    except AugmentError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    metrics = json.loads((Path(cfg.paths.reports) / "metrics.json").read_text())
    result = metrics | {
        "command": command_line(argv),
        "machine": machine_info(),
        "dataset": Path(args.data).resolve().name,
        "profile": args.long_tail,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(time.perf_counter() - start, 1),
        "stage_s": timings,
        # a reused GAN's training time is in neither stage_s nor wall_s (with the workdir's finished
        # GAN, train-gan only checks it: its stage time is then not a training time either)
        "reused_gan": not trained and args.synthetic == "gan",
        # what the GAN strategies' rows were: the GAN's samples, or real images (a perfect generator)
        "synthetic_source": "gan" if args.synthetic == "gan" else SOURCE_NAME,
        # real images only: the classes that had fewer left out than the release asks {class: [asked, drawn]}
        **({} if args.synthetic == "gan" else {"real_short": read_manifest(cfg.paths.synthetic).get("short") or {}}),
        # this process and its evaluation workers together (their summed RSS, sampled each second)
        "peak_rss_mb": memory.peak_mb,
        "peak_rss_scope": "process tree",
        # as `augment show-params` shows them: train_gan.recipe resolved against the prepared data
        "params": config.dump(with_recipe(cfg)),
        "selection": selection_check(metrics, pd.read_parquet(Path(cfg.paths.reports) / "predictions.parquet")),
        # the mode-collapse signal at the GAN's last evaluation (issue 23: no warning at the end)
        "gan_diversity_at_end": diversity_at_end(cfg.paths.gan, metrics["class_names"]),
    }
    atomic.write_json(out, result)
    g = metrics.get("gain") or {}
    ba = (g.get("balanced_accuracy") or {})
    print(f"{out}: {g.get('strategy')} vs {g.get('baseline')}: {ba.get('mean')} {ba.get('ci95')} -> {g.get('verdict')}; "
          f"recommended {(metrics.get('recommendation') or {}).get('strategy')}, selection {result['selection']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
