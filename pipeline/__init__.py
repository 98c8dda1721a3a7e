"""augment: balance an imbalanced image dataset with a class-conditional GAN and measure the gain.

The library is pure functions and small classes; `pipeline.stages` is the only glue that reads and
writes the project's files, and the CLI, DVC and Prefect all call it.
"""

__version__ = "0.6.0"
