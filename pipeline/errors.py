"""User-facing errors: one line that names the file, row or key at fault and what to do.

The CLI prints `error: <message>` for these and exits non-zero without a traceback; anything else
is a bug and keeps its traceback.
"""


class AugmentError(Exception):
    """Base class for errors caused by the user's input or environment."""

    exit_code = 1


class ConfigError(AugmentError):
    """A params.yaml key or `--set` override is unknown or has a bad value."""

    exit_code = 2


class DataError(AugmentError):
    """An input file, row or image is missing, corrupt or inconsistent."""

    exit_code = 2


class TrainingError(AugmentError):
    """Training cannot go on (non-finite loss, incompatible checkpoint)."""

    exit_code = 1


class StorageError(AugmentError):
    """An output cannot be written: the disk or quota is full (the earlier file stays as it was)."""

    exit_code = 1
