"""`augment <stage>`: the command line that dvc.yaml and people call.

Reads `./params.yaml` (or `--params`), applies `--set dotted.key=value` overrides, runs the stage
from `pipeline.stages` and writes under the configured paths (`./data/` by default). Bad input
exits non-zero with one line naming the cause, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import errno
import os
import signal
import sys

from pipeline import __version__, atomic, config, params_file
from pipeline.errors import AugmentError
from pipeline.stages import stage
from pipeline.stages.files import set_progress
from pipeline.stages.recipe import shown_params
from pipeline.lock import LOCK_NAME, hold_outputs

# CLI name -> stages function name, in pipeline order.
STAGES = {
    "prepare": "prepare",
    "plan": "plan",
    "train-gan": "train_gan",
    "generate": "generate",
    "evaluate": "evaluate",
    "report": "report",
}
# What each stage reads and writes (paths as params.yaml `paths:` sets them by default).
STAGE_HELP = {
    "prepare": "read data.source, split it, impose the long-tail profile -> data/prepared/{train,val,test}.parquet "
               "+ class_counts.json",
    "plan": "read data/prepared/class_counts.json and plan.sampling_strategy -> data/plan.json {class: images to add}",
    "train-gan": "read data/prepared/train.parquet, train the GAN (train_gan.*) -> data/models/gan/ (checkpoints, "
                 "final.pt, curves, sample grids)",
    "generate": "read data/plan.json and data/models/gan/final.pt -> data/synthetic/ (data/*.parquet shards, "
                "classes.json, manifest.json, README.md, images/)",
    "evaluate": "read data/prepared/, data/plan.json and data/synthetic/, train every evaluate.strategies x seeds "
                "-> data/reports/metrics.json + predictions.parquet",
    "report": "read data/reports/metrics.json + predictions.parquet -> data/reports/report.md, report.html, figures/",
}
# what a run refused by another run's lock can do
LOCK_REMEDY = "pass --lock-timeout SECONDS to wait longer"
# errno values of a write refused by permissions or a read-only file system
NOT_WRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="augment", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"augment {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default=None, help="params file (default: ./params.yaml if present)")
    common.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param, value parsed as YAML (repeatable)")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    common.add_argument("--lock-timeout", type=float, default=60.0, metavar="SECONDS",
                        help="wait this long for another augment run on the same output folders (each folder "
                        f"holding a paths.* output has a {LOCK_NAME}; data/ by default) (default 60)")
    for name in STAGES:
        sub.add_parser(name, parents=[common], help=STAGE_HELP[name], description=STAGE_HELP[name])
    sub.add_parser("run", parents=[common], help="run every stage in order")
    sub.add_parser("show-params", parents=[common], help="print the validated params as JSON, train_gan.recipe resolved "
                   "against the prepared data")
    return p


def _stage(name: str):
    """The stage function of CLI command `name`, importing only its module."""
    return stage(STAGES[name])


def run_all(cfg: config.Config) -> None:
    """Every stage in order; stops at the first failure."""
    for name in STAGES:
        log = logging.getLogger("augment")
        log.info("== %s ==", name)
        _stage(name)(cfg)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="augment: %(message)s",
        stream=sys.stderr,
    )
    if args.quiet:
        set_progress(False)
    try:
        overrides = dict(params_file.parse_override(o) for o in args.overrides)
        cfg = params_file.load(args.params, overrides)
        if args.command == "show-params":
            print(json.dumps(shown_params(cfg), indent=2))
        elif args.command == "run":
            with hold_outputs(cfg, args.lock_timeout, LOCK_REMEDY):
                run_all(cfg)
        else:
            with hold_outputs(cfg, args.lock_timeout, LOCK_REMEDY):
                result = _stage(args.command)(cfg)
            if args.command == "plan":
                _print_plan(result)
    except AugmentError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        return _stdout_closed()
    except OSError as e:
        where = e.filename or "an output file"
        if e.errno in atomic.DISK_FULL:
            print(f"error: {where}: no space left on the device ({e.strerror}); free some space and rerun",
                  file=sys.stderr)
        elif e.errno in NOT_WRITABLE:
            print(f"error: {where}: cannot write there ({e.strerror}); make the folder writable or point "
                  "paths.* (and the working folder's data/) at one that is", file=sys.stderr)
        else:
            raise
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    try:
        sys.stdout.flush()  # a reader that went away (`augment show-params | head`) is noticed here
    except BrokenPipeError:
        return _stdout_closed()
    return 0


def _stdout_closed() -> int:
    """Our reader closed the pipe: stop quietly, as Unix tools do (no traceback at exit)."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 128 + signal.SIGPIPE


def _print_plan(quota: dict[str, int]) -> None:
    width = max(len(c) for c in quota)
    for c, n in quota.items():
        print(f"  {c:<{width}}  +{n}")
    print(f"  {'total':<{width}}  +{sum(quota.values())}")


if __name__ == "__main__":
    sys.exit(main())
