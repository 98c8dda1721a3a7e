"""Two `augment` runs on one folder: the second waits for `data/.augment.lock` or fails with one
clear line, never writes beside the first; a run killed with -9 frees the lock for the next one.
"""

from __future__ import annotations

import signal
import threading
import time

import filelock
import pytest

from faultlib import Project, assert_whole, outcome, reference, wait_for

pytestmark = pytest.mark.slow  # each `augment` process imports torch: several seconds apiece

BUSY = "error: another augment run holds data/.augment.lock"


def test_a_second_run_fails_cleanly_after_its_timeout(tmp_path):
    p = Project(tmp_path / "p")
    (p.root / "data").mkdir()
    with filelock.FileLock(p.root / "data/.augment.lock"):  # as a running `augment` holds it
        start = time.monotonic()
        proc = p.run("prepare", "-q", "--lock-timeout", "1")
        waited = time.monotonic() - start
    assert proc.returncode == 1 and waited >= 1.0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"{BUSY} (waited 1 s); let it finish, or pass --lock-timeout SECONDS to wait longer"]
    assert "Traceback" not in proc.stderr
    assert [f.name for f in (p.root / "data").iterdir()] == [".augment.lock"]  # nothing else written


def test_a_second_run_waits_for_the_first(tmp_path):
    p = Project(tmp_path / "p")
    (p.root / "data").mkdir()
    held, done, released = threading.Event(), threading.Event(), []

    def hold():  # as a running `augment` would (a filelock is taken and freed in one thread)
        with filelock.FileLock(p.root / "data/.augment.lock"):
            held.set()
            done.wait(120)
            released.append(time.time())

    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    log = tmp_path / "second.log"
    try:
        second = p.popen("prepare", "-q", "--lock-timeout", "120", log=log)
        wait_for(lambda: "another augment run holds data/.augment.lock; waiting up to 120 s" in log.read_text(),
                 second, 60, "second run", log)
        assert not (p.root / "data/prepared").exists()  # it waits before writing anything
    finally:
        done.set()
        t.join()
    assert second.wait(120) == 0, log.read_text()
    assert (p.root / "data/prepared/class_counts.json").stat().st_mtime >= released[0] - 0.1  # written after


def test_two_runs_at_once_then_kill_9_and_the_waiting_run_finishes_the_job(tmp_path):
    p = Project(tmp_path / "p")
    logs = {name: tmp_path / f"{name}.log" for name in ("first", "third")}
    first, third = p.popen("run", "-q", log=logs["first"]), None
    try:
        wait_for(lambda: (p.root / "data/models/gan/checkpoint-4.pt").is_file(), first, 300, "first run", logs["first"])
        # frozen in the middle of GAN training, so that it cannot finish before the kill below
        first.send_signal(signal.SIGSTOP)
        # a second run gives up after 1 s, with one line, and without touching the first run's files
        second = p.run("run", "-q", "--lock-timeout", "1")
        errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert second.returncode == 1 and errors == [
            f"{BUSY} (waited 1 s); let it finish, or pass --lock-timeout SECONDS to wait longer"], second.stderr
        # a third one waits; the first is killed outright, and the third takes over
        third = p.popen("run", "-q", "--lock-timeout", "600", log=logs["third"])
        wait_for(lambda: "waiting up to 600 s" in logs["third"].read_text(), third, 120, "third run", logs["third"])
        first.send_signal(signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL
        assert third.wait(600) == 0, logs["third"].read_text()[-3000:]
    finally:
        for proc in (first, third):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert_whole(p.root)
    assert outcome(p.root) == outcome(reference().root)
