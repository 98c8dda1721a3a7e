"""`make serve`: serve deployment `augment/balance` of flow `augment` from this checkout.

Needs a Prefect API (`make server`, then PREFECT_API_URL=http://127.0.0.1:4200/api). Each run is
a subprocess of this one, in the project folder; runs on one project take turns (the flow's lock).
`python flows/serve.py --help` lists the options; Ctrl-C stops serving.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
# Before Prefect is imported: its logging setup reads these, and run subprocesses inherit them.
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "augment")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
sys.path.insert(0, str(PROJECT))  # this checkout's `flows` and `pipeline`, not an installed copy

DEPLOYMENT = "balance"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", default=DEPLOYMENT, help=f"deployment name (default {DEPLOYMENT})")
    p.add_argument("--limit", type=int, default=None,
                   help="most runs at once (default: no limit; runs on one project queue on its lock)")
    p.add_argument("--dask", default=None, metavar="ADDRESS",
                   help="run mapped tasks on a Dask cluster: a scheduler address, or `local` for a local cluster")
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.dask:
        os.environ["AUGMENT_DASK"] = args.dask  # read by flows.augment.task_runner() in each run
    # Runs start in this folder and load the flow as the module `flows.augment`.
    os.chdir(PROJECT)
    from prefect.deployments.runner import EntrypointType

    from flows.augment import augment

    augment.serve(
        name=args.name,
        limit=args.limit,
        tags=["augment"],
        description="Balance the project's dataset with a class-conditional GAN and version the result "
        '(parameters: overrides={"section.key": value}, lock_timeout, push).',
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


if __name__ == "__main__":
    main()
