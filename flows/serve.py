"""`make serve`: serve deployment `augment/balance` of flow `augment` from this checkout.

Needs a Prefect API (`make server`, then PREFECT_API_URL=http://127.0.0.1:4200/api): it waits
`--wait` seconds for one, then says in one line to run `make server` first (exit 2). Each run is a
subprocess of this one, in the project folder; runs on one project take turns (the flow's lock).
`python flows/serve.py --help` lists the options; one Ctrl-C stops serving.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
# Before Prefect is imported: its logging setup reads these, and run subprocesses inherit them.
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "augment")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
sys.path.insert(0, str(PROJECT))  # this checkout's `flows` and `pipeline`, not an installed copy

DEPLOYMENT = "balance"
WAIT = 30.0  # seconds to wait for the Prefect API by default


class NoServer(Exception):
    """No Prefect API answered; the message is the one line to show."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", default=DEPLOYMENT, help=f"deployment name (default {DEPLOYMENT})")
    p.add_argument("--limit", type=int, default=None,
                   help="most runs at once (default: no limit; runs on one project queue on its lock)")
    p.add_argument("--dask", default=None, metavar="ADDRESS",
                   help="run mapped tasks on a Dask cluster: a scheduler address, or `local` for a local cluster")
    p.add_argument("--wait", type=float, default=WAIT, metavar="SECONDS",
                   help=f"how long to wait for the Prefect API to answer (default {WAIT:g})")
    return p


def _healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api.rstrip('/')}/health", timeout=2) as r:
            return r.status == 200
    except (OSError, ValueError):  # refused, timed out, not HTTP (URLError and HTTPError are OSErrors)
        return False


def wait_for_api(api: str | None, seconds: float) -> None:
    """Return once `api`/health answers; `NoServer` if it has not within `seconds`."""
    if not api:
        raise NoServer("PREFECT_API_URL is not set; run `make server` in another terminal, then `make serve` "
                       "(which points PREFECT_API_URL at it)")
    deadline = time.monotonic() + seconds
    while not _healthy(api):
        if time.monotonic() >= deadline:
            raise NoServer(f"no Prefect API answers at {api} (waited {seconds:g} s); run `make server` in another "
                           "terminal first, or point PREFECT_API_URL at a running server")
        time.sleep(1)


async def serve(runner) -> None:
    """Run `runner` until the first SIGINT, which stops it (a second one exits at once)."""
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task] = []

    def on_sigint() -> None:
        if stopping:
            os._exit(130)  # a second Ctrl-C while shutting down: do not wait
        print("stopping (Ctrl-C again to exit at once)", file=sys.stderr, flush=True)
        stopping.append(loop.create_task(runner.astop()))

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    await runner.start()
    if stopping:
        await stopping[0]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.dask:
        os.environ["AUGMENT_DASK"] = args.dask  # read by flows.augment.task_runner() in each run
    # Runs start in this folder and load the flow as the module `flows.augment`.
    os.chdir(PROJECT)
    import httpx
    from prefect.deployments.runner import EntrypointType
    from prefect.runner import Runner
    from prefect.settings import PREFECT_API_URL

    from flows.augment import augment

    api = PREFECT_API_URL.value()
    try:
        wait_for_api(api, args.wait)
        runner = Runner(name=args.name, limit=args.limit)
        runner.add_flow(
            augment,
            name=args.name,
            tags=["augment"],
            description="Balance the project's dataset with a class-conditional GAN and version the result "
            '(parameters: overrides={"section.key": value}, lock_timeout, push).',
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
    except NoServer as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except httpx.TransportError as e:  # the server went away between the health check and registering
        print(f"error: the Prefect API at {api} stopped answering ({e.__class__.__name__}); "
              "run `make server` in another terminal first", file=sys.stderr)
        return 2
    print(f"serving deployment {augment.name}/{args.name} (API {api}); trigger a run with "
          f"`prefect deployment run {augment.name}/{args.name}`; Ctrl-C stops", flush=True)
    asyncio.run(serve(runner))
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C before serving began (while importing or waiting for the API)
        sys.exit(130)
