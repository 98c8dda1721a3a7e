"""Selection benchmark: how often does a validation-only rule pick the wrong non-GAN strategy?

Validation follows the training profile, so the rarest class may have four validation images and
every strategy scores ~98% there; the choice among strategies is then mostly noise. This benchmark
measures it: for each case (dataset, long-tail profile, data seed) it prepares the splits with the
pipeline's own `prepare` and `plan` stages, trains every non-GAN strategy for `--seeds` seeds with
the pipeline's `evaluate`, and scores each rule of `pipeline.recommend.SELECTORS` (plus a fixed
`logit_adjust` as a reference): the strategy it picks on validation, that pick's test balanced
accuracy, the regret (the best strategy on test minus the pick) and whether the pick lies inside
the test-best strategy's 95% CI. The test set is read only to score the picks.

    python benchmarks/selection.py --out benchmarks/results/selection [--cases mnist_lt_s0 ...]
        [--seeds 3] [--set key=value ...]

One result file per case (`<case>.json`, with its command and machine) and `summary.json` over all
the case files in the folder; a case whose file exists is kept (resume after a stop: delete the file
to measure it again). Several processes may each take some cases (`--cases`, e.g. one per core).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shlex
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import outcome  # noqa: E402
from machine import machine_info  # noqa: E402
from scarcity import tail_counts  # noqa: E402

from pipeline import atomic  # noqa: E402
from pipeline.evaluate import EvalData, evaluate  # noqa: E402
from pipeline.recommend import SELECTORS, summarize_predictions, within_noise  # noqa: E402
from pipeline.results import write_results  # noqa: E402
from pipeline.stages import stage  # noqa: E402
from pipeline.stages.files import SPLITS, read_prepared  # noqa: E402
from pipeline.stages.plan import read_plan  # noqa: E402
from pipeline.strategies import STRATEGIES  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
# a fixed strategy, the literature's strongest cheap default, as the reference a rule must beat
FIXED = "logit_adjust"
NON_GAN = [n for n, s in STRATEGIES.items() if not s.uses_synthetic]


def _case(folder: str, profile: str | None, seed: int | None, tail: int | None = None, **extra) -> tuple:
    """(dataset folder, --long-tail of outcome.py or None, settings): with `tail`, the scarcity
    sweep's profile (head 800, exponential down to `tail`); the seed (None: params.yaml's) moves
    which images land in train, validation and the profile's cut."""
    settings = {"data.long_tail.profile": "counts", "data.long_tail.counts": tail_counts(800, tail, 10)} if tail else {}
    return folder, profile, settings | ({} if seed is None else {"data.split_seed": seed, "data.long_tail.seed": seed}) | extra


CASES = {
    **{f"mnist_lt_s{s}": _case("mnist", "deepsmote", s) for s in range(3)},
    **{f"usps_lt_s{s}": _case("usps", "rho=100", s) for s in range(3)},
    **{f"mnist_tail20_s{s}": _case("mnist", None, s, tail=20) for s in range(2)},
    "mnist_tail5_s0": _case("mnist", None, None, tail=5),
    "gtsrb_natural_s0": _case("gtsrb", "natural=0.25", None, **{"evaluate.epochs": 6}),
}
# measured after the rule strongest_within_noise was written from the cases above: held out
HELD_OUT = {
    **{f"usps_lt_s{s}": _case("usps", "rho=100", s) for s in (3, 4)},
    **{f"mnist_tail5_s{s}": _case("mnist", None, s, tail=5) for s in (1, 2)},
    "mnist_tail20_s2": _case("mnist", None, 2, tail=20),
    "gtsrb_natural_s1": _case("gtsrb", "natural=0.25", 1, **{"evaluate.epochs": 6}),
}
CASES |= HELD_OUT


def score_rules(predictions: pd.DataFrame, num_classes: int) -> dict:
    """{rule: its pick, the pick's test balanced accuracy, regret, inside the best's CI} for one
    predictions table of non-GAN strategies (validation picks; the test set only scores them)."""
    val = summarize_predictions(predictions, num_classes, "val")
    test = summarize_predictions(predictions, num_classes, "test")
    names = [n for n in val if n in test]
    ba = {n: test[n]["balanced_accuracy"] for n in names}
    best = max(names, key=lambda n: ba[n]["mean"])
    picks = {rule: pick(predictions, val, names) for rule, pick in SELECTORS.items()}
    if FIXED in names:
        picks[f"fixed_{FIXED}"] = FIXED
    # the strategies the report names as within the validation noise of the (default rule's) pick
    tied = [picks["balanced_accuracy"], *within_noise(predictions, names, picks["balanced_accuracy"], num_classes)]
    return {
        "best_on_test": best,
        "within_noise": tied,
        "best_within_noise": best in tied,
        "test": {n: ba[n]["mean"] for n in names},
        "validation": {n: val[n]["balanced_accuracy"]["mean"] for n in names},
        "rules": {rule: {"pick": n, "test": ba[n]["mean"], "regret": ba[best]["mean"] - ba[n]["mean"],
                         "inside_best_ci": ba[n]["mean"] >= ba[best]["ci95"][0]} for rule, n in picks.items()},
    }


def summarize(cases: dict[str, dict]) -> dict:
    """Per rule over the cases: median, mean and worst regret, how often the pick was inside the
    test-best strategy's CI, and how often it was the test-best strategy itself."""
    rules = dict.fromkeys(r for c in cases.values() for r in c["rules"])
    out = {}
    for rule in rules:
        rows = [c["rules"][rule] | {"best": c["best_on_test"]} for c in cases.values() if rule in c["rules"]]
        regrets = [r["regret"] for r in rows]
        out[rule] = {"cases": len(rows), "median_regret": statistics.median(regrets),
                     "mean_regret": statistics.fmean(regrets), "worst_regret": max(regrets),
                     "inside_best_ci": sum(r["inside_best_ci"] for r in rows),
                     "picked_best": sum(r["pick"] == r["best"] for r in rows)}
    return out


def noise_summary(cases: dict[str, dict]) -> dict | None:
    """How often the test-best strategy is among those the report calls within the validation
    noise of the pick, and how many that set holds (median) of how many strategies."""
    tied = [c for c in cases.values() if "within_noise" in c]
    if not tied:
        return None
    return {"cases": len(tied), "best_inside": sum(c["best_within_noise"] for c in tied),
            "median_size": statistics.median(len(c["within_noise"]) for c in tied),
            "strategies": statistics.median(len(c["test"]) for c in tied)}


def run_case(name: str, args: argparse.Namespace, work: Path) -> dict:
    folder, profile, extra = CASES[name]
    ns = argparse.Namespace(data=str(Path(args.data_root) / folder), seeds=args.seeds, device="cpu",
                            long_tail=profile or "natural", params=str(Path(__file__).resolve().parents[1] / "params.yaml"),
                            set=[f"evaluate.strategies=[{','.join(NON_GAN)}]", "evaluate.gan_quality=false",
                                 *(f"{k}={json.dumps(v)}" for k, v in extra.items()), *args.set])
    cfg = outcome.build_config(ns, work / name)
    start = time.perf_counter()
    stage("prepare")(cfg)
    stage("plan")(cfg)
    tables = {split: read_prepared(cfg, split) for split in SPLITS}
    result = evaluate(cfg.evaluate, EvalData(tables["train"], tables["val"], tables["test"]), read_plan(cfg),
                      progress=False)
    predictions = result["predictions"]
    write_results(work / name, result)  # metrics.json + predictions.parquet, kept for re-scoring
    k = tables["train"].num_classes
    return score_rules(predictions, k) | {
        "case": name, "dataset": folder, "held_out": name in HELD_OUT, "settings": {"long_tail": profile, **extra},
        "train_counts": [int(c) for c in tables["train"].counts()],
        "val_counts": [int(c) for c in tables["val"].counts()],
        "wall_s": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for <case>.json and summary.json")
    p.add_argument("--cases", nargs="+", default=None, choices=list(CASES), help="default: all of them")
    p.add_argument("--data", help="instead of the built-in cases, one case of your own: a folder in the npz layout")
    p.add_argument("--long-tail", default="natural", help="with --data: as in outcome.py (deepsmote, rho=<ratio>, ...)")
    p.add_argument("--data-root", default=str(SHARED), help="folder holding mnist/, usps/, gtsrb/")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--workdir", default=str(Path(__file__).parent / "work" / "selection"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--rescore", action="store_true",
                   help="score the rules again on each case's stored predictions (the workdir's), training nothing")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="augment: %(message)s", stream=sys.stderr)
    out, work = Path(args.out), Path(args.workdir).resolve()
    if args.data:  # a folder of one's own (an absolute path ignores --data-root)
        name = Path(args.data).resolve().name
        CASES[name] = (str(Path(args.data).resolve()), args.long_tail, {})
        args.cases = [name]
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    for name in args.cases or list(CASES):
        path = out / f"{name}.json"
        if args.rescore and path.is_file():
            stored = pd.read_parquet(work / name / "predictions.parquet")
            old = json.loads(path.read_text())
            atomic.write_json(path, old | score_rules(stored, len(old["train_counts"])) | {"held_out": name in HELD_OUT})
            continue
        if path.is_file() or args.rescore:
            continue
        print(f"selection: case {name}", file=sys.stderr, flush=True)
        r = run_case(name, args, work)
        atomic.write_json(path, r | {"command": command, "machine": machine_info(),
                                     "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
        print(f"selection: {name}: " + ", ".join(f"{rule} {v['pick']} regret {100 * v['regret']:.2f}"
                                                 for rule, v in r["rules"].items()), file=sys.stderr, flush=True)
    cases = {f.stem: json.loads(f.read_text()) for f in sorted(out.glob("*.json")) if f.stem != "summary"}
    held_out = {n: c for n, c in cases.items() if c.get("held_out")}
    atomic.write_json(out / "summary.json", {"cases": sorted(cases), "rules": summarize(cases),
                                             "rules_held_out": summarize(held_out) if held_out else None,
                                             "within_noise": noise_summary(cases)})
    print(json.dumps(summarize(cases), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
