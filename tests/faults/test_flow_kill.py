"""kill -9 of a Prefect flow run (the flow process and its temporary Prefect server) in the middle of
GAN training, in a git + DVC copy of the project: the next run undoes what the killed one left,
completes, versions exactly one result, and that result equals an uninterrupted `augment run`'s.
While the flow runs, `augment run` on the same folder fails cleanly (data/.augment.lock).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from faultlib import REPO, TINY_PARAMS, assert_whole, outcome, reference, wait_for

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def _env(home: Path) -> dict:
    """No Prefect API configured: each flow process starts its own temporary server on 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "GIT_"))}
    return dict(env, PATH=f"{BIN}{os.pathsep}{env['PATH']}", PYTHONPATH=str(REPO), PREFECT_HOME=str(home),
                PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
                PREFECT_LOGGING_EXTRA_LOGGERS="augment", DVC_NO_ANALYTICS="1", PYTHONUNBUFFERED="1",
                GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
                GIT_COMMITTER_EMAIL="t@example.com")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def project_copy(dest: Path) -> Path:
    """The project's files as git sees them, with the tiny params, in a new git repo."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        if (REPO / rel).is_file() and not rel.startswith("data/"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    (dest / "params.yaml").write_text(TINY_PARAMS)
    for args in (["init", "-q", "-b", "main"], ["config", "user.name", "t"], ["config", "user.email", "t@example.com"],
                 ["add", "-A"], ["commit", "-qm", "project"]):
        _git(dest, *args)
    return dest


def flow_process(repo: Path, env: dict, log: Path) -> subprocess.Popen:
    """The flow called in a fresh process (its own session, so the kill reaches its server too)."""
    code = (f"import sys; sys.path.insert(0, {str(repo)!r}); from flows.augment import augment; "
            f"print('VERSION', augment(project={str(repo)!r}, lock_timeout=5)['tag'])")
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-c", code], cwd=repo, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def test_kill_9_during_a_flow_run_then_a_rerun_versions_the_uninterrupted_result(tmp_path):
    repo = project_copy(tmp_path / "project")
    env = _env(tmp_path / "prefect-home")
    log = tmp_path / "killed.log"
    killed = flow_process(repo, env, log)
    try:
        wait_for(lambda: (repo / "data/models/gan/checkpoint-4.pt").is_file(), killed, 400, "flow run", log)
        os.killpg(killed.pid, signal.SIGSTOP)  # frozen mid-training: it cannot finish before the kill
        # the CLI on the same folder meanwhile: one clear line, nothing written
        cli = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "-q", "--lock-timeout", "1"], cwd=repo,
                             env=env, capture_output=True, text=True)
        assert cli.returncode == 1 and "error: another augment run holds data/.augment.lock" in cli.stderr, cli.stderr
        os.killpg(killed.pid, signal.SIGKILL)  # the flow process, its task threads and its Prefect server
        assert killed.wait(30) == -signal.SIGKILL
    finally:
        if killed.poll() is None:
            os.killpg(killed.pid, signal.SIGKILL)
            killed.wait()
    assert (repo / ".dvc/tmp/augment-flow.pending.json").is_file()  # what the next run must put back
    assert _git(repo, "tag", "--list", "augment-*") == ""  # nothing was versioned
    assert_whole(repo)

    rerun = flow_process(repo, env, tmp_path / "rerun.log")
    assert rerun.wait(600) == 0, (tmp_path / "rerun.log").read_text()[-4000:]
    text = (tmp_path / "rerun.log").read_text()
    assert "was interrupted; putting back params.yaml" in text
    tags = _git(repo, "tag", "--list", "augment-*").split()
    assert len(tags) == 1 and f"VERSION {tags[0]}" in text
    assert not (repo / ".dvc/tmp/augment-flow.pending.json").exists()
    status = subprocess.run([str(BIN / "dvc"), "status"], cwd=repo, env=env, capture_output=True, text=True)
    assert "up to date" in status.stdout.lower(), status.stdout + status.stderr
    assert_whole(repo)
    assert outcome(repo) == outcome(reference().root)
