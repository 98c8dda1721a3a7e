"""Scarcity sweep: when do the GAN's images help? The outcome benchmark (`outcome.py`) on one
dataset with the rarest class shrunk to each tail size, head fixed, classes in between on an
exponential profile; one result file per tail, then a summary of the gain of the validation-best
GAN strategy over the validation-best non-GAN one.

    python benchmarks/scarcity.py --data ../shared/datasets/mnist --tails 5 10 20 40 100 \
        --out benchmarks/results/scarcity [--seeds 3] [--set key=value ...]

A tail whose result file exists is kept (resume after a stop); delete it to measure again.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import outcome  # noqa: E402

from pipeline import atomic  # noqa: E402
from pipeline.data import exponential_profile  # noqa: E402


def tail_counts(head: int, tail: int, num_classes: int) -> list[int]:
    """Per-class counts from `head` down to `tail` on the exponential (CIFAR-LT) profile."""
    counts = exponential_profile(head, num_classes, head / tail)
    counts[-1] = tail  # int() may round the last one down by one
    return counts


def summarize(results: dict[int, dict]) -> dict:
    """{tail: the headline gain and what each side scored} for the rendered table and plot."""
    rows = {}
    for tail, r in sorted(results.items()):
        g = r.get("gain") or {}
        d = g.get("balanced_accuracy") or {}
        ba = lambda n: r["strategies"][n]["balanced_accuracy"]["mean"] if n in r["strategies"] else None  # noqa: E731
        rows[str(tail)] = {"gan_strategy": g.get("strategy"), "baseline": g.get("baseline"),
                           "gan": ba(g.get("strategy")), "baseline_score": ba(g.get("baseline")),
                           "gain": d.get("mean"), "ci95": d.get("ci95"), "verdict": g.get("verdict"),
                           "recommended": (r.get("recommendation") or {}).get("strategy"),
                           "wall_s": r.get("wall_s")}
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder with train.npz/test.npz (+ classes.json)")
    p.add_argument("--tails", type=int, nargs="+", default=[5, 10, 20, 40, 100])
    p.add_argument("--head", type=int, default=800, help="images of the largest class")
    p.add_argument("--classes", type=int, default=10, help="number of classes of the dataset")
    p.add_argument("--out", required=True, help="folder for tail_<n>.json and summary.json")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    out = Path(args.out)
    results = {}
    for tail in args.tails:
        path = out / f"tail_{tail}.json"
        if not path.is_file():
            counts = ",".join(str(c) for c in tail_counts(args.head, tail, args.classes))
            rc = outcome.main(["--data", args.data, "--long-tail", "natural", "--out", str(path),
                               "--seeds", str(args.seeds), "--workdir", str(out.parent.parent / "work" / f"scarcity_{tail}"),
                               "--set", "data.long_tail.profile=counts", "--set", f"data.long_tail.counts=[{counts}]",
                               *[a for s in args.set for a in ("--set", s)]])
            if rc:
                return rc
        results[tail] = json.loads(path.read_text())
        atomic.write_json(out / "summary.json", {"data": args.data, "head": args.head, "tails": summarize(results)})
    print(json.dumps(summarize(results), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
