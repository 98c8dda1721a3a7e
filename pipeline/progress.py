"""Progress that reads well in logs: a tqdm bar on a terminal, plain lines everywhere else.

`progress_bar(...)` (also importable as `tqdm`) takes tqdm's arguments. On a terminal (or in a
Jupyter kernel) it is `tqdm.auto.tqdm`; when the stream is a file, a pipe or a Prefect worker's log,
it writes one line every `every_percent` percent or `every_seconds` seconds, whichever comes first,
and a closing line: no carriage returns, so `augment run > log 2>&1` stays one line per report.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

from tqdm.auto import tqdm as auto_tqdm

EVERY_PERCENT = 10.0  # a line each time another 10% is done
EVERY_SECONDS = 60.0  # and at least one a minute while it runs (also the only lines without a total)

_clock = time.monotonic  # tests move time by replacing this


def progress_bar(
    iterable: Iterable | None = None,
    total: float | None = None,
    desc: str | None = None,
    disable: bool = False,
    leave: bool = True,
    unit: str = "it",
    initial: float = 0,
    file: IO[str] | None = None,
    logger: logging.Logger | None = None,
    every_percent: float = EVERY_PERCENT,
    every_seconds: float = EVERY_SECONDS,
    **tqdm_kwargs: Any,
):
    """A progress bar for a terminal, or a `LineProgress` for logs; a drop-in for `tqdm(...)`.

    Args:
        iterable, total, desc, disable, leave, unit, initial, file: as tqdm takes them; `file`
            defaults to sys.stderr and decides which of the two is used (its `isatty()`).
        logger: off a terminal, send each line to `logger.info` instead of `file` (e.g. the
            "augment" logger, which Prefect forwards into a task's logs).
        every_percent: off a terminal, a line each time this much more of `total` is done.
        every_seconds: off a terminal, a line at least this often while running.
        **tqdm_kwargs: passed on to tqdm on a terminal (ignored otherwise).

    Returns:
        An object with tqdm's `update`, `set_postfix`, `set_description`, `close`, iteration and
        `with` support. A transient bar (`leave=False`, such as one per epoch inside a bigger loop)
        writes only the time-based lines off a terminal, so nested loops do not flood a log.
    """
    stream = sys.stderr if file is None else file
    if disable or _interactive(stream):
        return auto_tqdm(iterable, total=total, desc=desc, disable=disable, leave=leave, unit=unit,
                         initial=initial, file=file, **tqdm_kwargs)
    return LineProgress(iterable, total, desc, leave, unit, initial, stream, logger, every_percent, every_seconds)


tqdm = progress_bar  # `from pipeline.progress import tqdm` swaps tqdm's import without touching its calls


def _interactive(stream: IO[str]) -> bool:
    """A terminal, or a Jupyter kernel's stream (tqdm.auto draws a widget there)."""
    if type(stream).__module__.startswith("ipykernel"):
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def _clock_text(seconds: float) -> str:
    """Seconds as H:MM:SS or M:SS."""
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class LineProgress:
    """tqdm's counting API, reported as whole lines: `desc: n/total (p%) rate, elapsed, eta, postfix`.

    Lines come when the done fraction crosses the next multiple of `every_percent`, or when
    `every_seconds` have passed since the last line, and once more at `close` (if `leave`). With a
    total, a run therefore writes at most 100 / every_percent lines plus one per `every_seconds`.
    """

    def __init__(
        self, iterable: Iterable | None, total: float | None, desc: str | None, leave: bool, unit: str,
        initial: float, stream: IO[str], logger: logging.Logger | None, every_percent: float, every_seconds: float,
    ):
        if every_percent <= 0 or every_seconds <= 0:
            raise ValueError(f"need every_percent > 0 and every_seconds > 0, got {every_percent}, {every_seconds}")
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.leave, self.unit = iterable, total, desc or "", leave, unit
        self.n, self.stream, self.logger = initial, stream, logger
        self.every_percent, self.every_seconds = every_percent, every_seconds
        self.postfix = ""
        self.closed = False
        self._start_n = initial
        self._t0 = self._last_t = _clock()
        self._next_percent = self._percent_step_after(initial)

    # ------------------------------------------------------------------------- tqdm's API

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return int(self.total) if self.total is not None else len(self.iterable)

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        """Count n more done; write a line if a percent step or the time interval was passed."""
        self.n += n
        now = _clock()
        # the closing line reports 100%, so percent steps stop short of it
        due_percent = self.leave and self.total and self._next_percent <= 100.0 * self.n / self.total < 100.0
        if due_percent or now - self._last_t >= self.every_seconds:
            self._write(now)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        """Extra `key=value` fields shown at the end of the next line (as tqdm formats them)."""
        items = dict(ordered_dict or {}) | kwargs
        self.postfix = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        """tqdm redraws here; a log gets its lines on schedule only."""

    def close(self) -> None:
        """Write the closing line (if `leave` and anything was counted); later calls do nothing."""
        if self.closed:
            return
        self.closed = True
        if self.leave and self.n > self._start_n:
            self._write(_clock(), final=True)

    # ------------------------------------------------------------------------- lines

    def _percent_step_after(self, n: float) -> float:
        """The next multiple of every_percent above n's percentage."""
        if not self.total:
            return float("inf")
        done = 100.0 * n / self.total
        return (int(done // self.every_percent) + 1) * self.every_percent

    def _write(self, now: float, final: bool = False) -> None:
        self._last_t = now
        self._next_percent = self._percent_step_after(self.n)
        line = self._format(now - self._t0, final)
        if self.logger is not None:
            self.logger.info("%s", line)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def _format(self, elapsed: float, final: bool) -> str:
        n = _number(self.n)
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else None
        parts = [f"{n}/{_number(self.total)} ({100.0 * self.n / self.total:.0f}%)" if self.total else f"{n} {self.unit}"]
        if rate is not None:
            parts.append(f"{rate:,.0f} {self.unit}/s" if rate >= 100 else f"{rate:.3g} {self.unit}/s")
        parts.append(f"{'took' if final else 'elapsed'} {_clock_text(elapsed)}")
        if not final and rate and self.total and self.total > self.n:
            parts.append(f"eta {_clock_text((self.total - self.n) / rate)}")
        if self.postfix:
            parts.append(self.postfix)
        head = f"{self.desc}: " if self.desc else ""
        return head + ", ".join(parts)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.4g}"
