"""A dvc.yaml stage command (`augment <stage>`) launched in N processes under torchrun (DDP).

The Prefect flow trains the GAN this way with `train_processes > 1`: one process per GPU (gloo on
the CPU). The processes are the CLI's, reading ./params.yaml; the launcher already holds the
output locks for them (`pipeline.lock.HELD_ENV`).
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys

from pipeline.errors import ConfigError, TrainingError
from pipeline.lock import HELD_ENV

log = logging.getLogger("augment")


def torchrun(cmd: str, processes: int) -> dict:
    """Run `cmd` (a dvc.yaml stage command, `augment <stage> ...`) under `torchrun --nproc_per_node
    processes`; its output goes to the `augment` log.

    Raises:
        TrainingError: the launch failed; names the CLI's last `error:` line.
    """
    program, *args = shlex.split(cmd)
    if program != "augment" or not args:
        raise ConfigError(f"dvc.yaml command {cmd!r}: torchrun launches `augment <stage>` commands only")
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    log.info("torchrun: %d processes: augment %s", processes, " ".join(args))
    # the ranks must not wait for the output folders' locks: the caller holds them for them
    proc = subprocess.run([*launch, "-m", "pipeline.cli", *args, "-q"], capture_output=True, text=True,
                          env=dict(os.environ, **{HELD_ENV: "1"}))
    for line in (proc.stdout + proc.stderr).splitlines()[-40:]:
        log.info("torchrun: %s", line)
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        raise TrainingError(f"torchrun --nproc_per_node={processes} {cmd} failed ({proc.returncode}): "
                            f"{errors[-1] if errors else 'see the run log'}")
    return {"processes": processes}
