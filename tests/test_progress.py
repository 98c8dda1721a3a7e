"""pipeline.progress: plain, bounded lines off a terminal; tqdm on one."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import progress
from pipeline.progress import LineProgress, progress_bar

REPO = Path(__file__).resolve().parents[1]


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(progress, "_clock", c)
    return c


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_whole_lines_every_ten_percent_and_no_carriage_return(clock):
    out = io.StringIO()
    seen = []
    for i in progress_bar(range(4000), desc="train-gan", file=out):
        clock.t += 0.001
        seen.append(i)
    text = out.getvalue()
    assert seen == list(range(4000))  # the iterable passes through unchanged
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 10  # 10%, 20%, ..., 90%, and the closing line at 100%
    assert lines[0] == "train-gan: 400/4000 (10%), 1,000 it/s, elapsed 0:00, eta 0:04"
    assert lines[-1] == "train-gan: 4000/4000 (100%), 1,000 it/s, took 0:04"


def test_lines_stay_bounded_however_small_the_updates(clock):
    out = io.StringIO()
    with progress_bar(total=1_000_000, desc="generate", unit="img", file=out) as bar:
        for _ in range(100_000):
            bar.update(10)
    assert len(out.getvalue().splitlines()) == 100 / progress.EVERY_PERCENT


def test_a_slow_run_also_writes_one_line_per_interval(clock):
    out = io.StringIO()
    bar = progress_bar(total=100, desc="slow", file=out, every_seconds=30)
    for _ in range(5):
        clock.t += 31  # no 10% step, but more than 30 s since the last line
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 6
    assert lines[0] == "slow: 1/100 (1%), 0.0323 it/s, elapsed 0:31, eta 51:09"


def test_postfix_initial_and_unknown_total(clock):
    out = io.StringIO()
    bar = progress_bar(total=10, initial=5, desc="train-gan", file=out)  # a resumed run
    clock.t = 2.0
    bar.set_postfix(d="0.512", g=1.25, refresh=False)
    bar.update(1)
    bar.close()
    assert out.getvalue().splitlines()[0] == "train-gan: 6/10 (60%), 0.5 it/s, elapsed 0:02, eta 0:08, d=0.512, g=1.25"
    out = io.StringIO()
    for _ in progress_bar(iter(range(3)), desc="stream", file=out):
        clock.t += 1
    assert out.getvalue() == "stream: 3 it, 1 it/s, took 0:03\n"  # no total: only the closing line here


def test_transient_bars_write_only_on_the_interval(clock):
    out = io.StringIO()
    for _ in range(20):  # an epoch bar inside a bigger loop: nothing in the log per epoch
        for _ in progress_bar(range(50), desc="classifier", leave=False, file=out):
            pass
    assert out.getvalue() == ""


def test_lines_can_go_to_a_logger(clock, caplog):
    log = logging.getLogger("augment")
    with caplog.at_level(logging.INFO, logger="augment"):
        for _ in progress_bar(range(10), desc="evaluate", file=io.StringIO(), logger=log, every_percent=50):
            clock.t += 1
    assert [r.getMessage() for r in caplog.records] == [
        "evaluate: 5/10 (50%), 1 it/s, elapsed 0:05, eta 0:05",
        "evaluate: 10/10 (100%), 1 it/s, took 0:10",
    ]


def test_a_terminal_gets_tqdm_and_disable_writes_nothing():
    from tqdm import tqdm as real_tqdm

    term = Terminal()
    bar = progress_bar(range(3), desc="x", file=term)
    assert isinstance(bar, real_tqdm)
    list(bar)
    assert "\r" in term.getvalue()  # a real bar redraws in place
    out = io.StringIO()
    assert list(progress_bar(range(3), disable=True, file=out)) == [0, 1, 2]
    assert out.getvalue() == ""
    assert isinstance(progress_bar(range(3), file=io.StringIO()), LineProgress)


def test_bad_intervals_are_refused():
    with pytest.raises(ValueError, match="every_percent > 0"):
        progress_bar(range(3), file=io.StringIO(), every_percent=0)


@pytest.mark.slow
def test_train_gan_and_generate_write_lines_into_a_piped_log(tmp_path):
    """The two long loops of the library, run with stderr piped to a file as `augment run > log 2>&1` is."""
    script = """
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
from pipeline import gan, gan_checkpoints
from pipeline.config import TrainGanConfig
from pipeline.data import ImageTable
from pipeline.generate import Sampler, generate
rng = np.random.default_rng(0)
table = ImageTable(rng.integers(0, 255, (24, 8, 8, 1), dtype=np.uint8), np.arange(24) % 2, ("a", "b"))
cfg = TrainGanConfig(steps=30, batch_size=8, z_dim=8, width=4, diffaug="", device="cpu", precision="fp32",
                     checkpoint_every=30, sample_every=30)
G, meta = gan_checkpoints.load_generator(gan.train_gan(cfg, table, Path("gan")))
generate(Sampler(G, meta, seed=0, block=16), {"a": 300, "b": 0}, batch_size=64)
"""
    log = tmp_path / "log"
    with log.open("w") as f:
        subprocess.run([sys.executable, "-c", script], cwd=tmp_path, stdout=f, stderr=subprocess.STDOUT, check=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    text = log.read_text()
    assert "\r" not in text
    lines = text.splitlines()
    train = [s for s in lines if s.startswith("train-gan: ")]
    gen = [s for s in lines if s.startswith("generate: ")]
    assert 2 <= len(train) <= 10 and train[-1].startswith("train-gan: 30/30 (100%)") and "g=" in train[-1]
    assert 2 <= len(gen) <= 10 and gen[-1].startswith("generate: 300/300 (100%)")
