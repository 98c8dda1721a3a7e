"""augment: balance an imbalanced image dataset with a class-conditional GAN and measure the gain.

The library is pure functions and small classes; `pipeline.stages` is the only glue that reads and
writes the project's files, and the CLI, DVC and Prefect all call it.
"""

__version__ = "0.5.0"

import os as _os

# Idle OpenMP threads sleep instead of spinning, unless the user chose: on a shared machine a
# spinning thread takes a core from a busy neighbour and every barrier waits for it (see
# pipeline/threads.py and BENCHMARKS.md "Shared cores"). It must be set before torch loads.
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
