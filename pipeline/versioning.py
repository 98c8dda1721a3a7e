"""A run's version: `dvc.lock` written by DVC, the data in the DVC cache and remote, a git commit + tag.

The Prefect flow calls these in order once its stages have succeeded: `check_project` before any
work, then `commit_data` (dvc commit, `dvc status` clean), `push_data`, `commit_version` (git commit
and annotated tag), `push_git`; `fetch_hint` says how another project gets the version's data.
Every git and DVC command goes through `sh`, so a failure is one `VersioningError` line.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from pipeline.params_file import PARAMS_FILE
from pipeline.errors import AugmentError, ConfigError

TAG_PREFIX = "augment-"


class VersioningError(AugmentError):
    """A git or DVC command failed while recording the run's version."""


def dvc_executable() -> str:
    """The `dvc` of this Python environment (the one whose API `pipeline.lineage` uses), else PATH's."""
    beside = Path(sys.executable).with_name("dvc")
    return str(beside) if beside.is_file() else (shutil.which("dvc") or "dvc")


def sh(root: Path, *cmd: str, check: bool = True) -> str:
    """Run `cmd` in `root`; return its stdout; a failure raises `VersioningError` with its stderr
    (or, with check=False, returns "")."""
    cmd = (dvc_executable(), *cmd[1:]) if cmd[0] == "dvc" else cmd
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True,
                          env=dict(os.environ, DVC_NO_ANALYTICS="1"))
    if proc.returncode != 0:
        if not check:
            return ""
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        shown = " ".join([Path(cmd[0]).name, *cmd[1:3]])
        raise VersioningError(f"{root}: `{shown}` failed ({proc.returncode}): {tail}")
    return proc.stdout.strip()


def head(root: Path) -> str:
    """The commit HEAD names; "" in a repository without commits."""
    return sh(root, "git", "rev-parse", "--verify", "--quiet", "HEAD", check=False)


def check_project(root: Path, push: bool, git_push: bool = False) -> str | None:
    """Fail before any work if `root` cannot be versioned: not git + DVC, no identity, no remote.

    Returns:
        The DVC default remote's name when `push`, else None.
    """
    if not (root / "dvc.yaml").is_file() or not (root / ".dvc").is_dir():
        raise ConfigError(f"{root}: not a DVC project with a dvc.yaml; run the flow in the augment checkout")
    top = sh(root, "git", "rev-parse", "--show-toplevel", check=False)
    if not top or Path(top).resolve() != root:
        raise ConfigError(f"{root}: not the top folder of a git repository; `git init` it or pass project=")
    for who in ("AUTHOR", "COMMITTER"):  # from git config or GIT_AUTHOR_NAME etc., as `git commit` sees it
        if not sh(root, "git", "var", f"GIT_{who}_IDENT", check=False):
            raise ConfigError(f"{root}: git does not know who commits; set user.name and user.email "
                              "(`git config user.email you@example.com`) so runs can commit")
    if git_push and not sh(root, "git", "remote", "get-url", "origin", check=False):
        raise ConfigError(f"{root}: git_push=true but the repository has no remote `origin`")
    remote = sh(root, "dvc", "remote", "default", check=False) if push else None
    if push and not remote:
        raise ConfigError(f"{root}: DVC has no default remote; `dvc remote add -d NAME URL` or run with push=false")
    return remote


def version_tag(run_id: str | None, now: dt.datetime | None = None) -> str:
    """`augment-<YYYY-MM-DD>-<first 6 hex of the flow run id>` (UTC date)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    short = (run_id or os.urandom(3).hex()).replace("-", "")[:6]
    return f"{TAG_PREFIX}{now:%Y-%m-%d}-{short}"


def commit_data(root: Path, tag: str) -> None:
    """`dvc commit`: dvc.lock records the run's params and output hashes, the outputs go to the cache.

    Raises:
        VersioningError: `tag` exists already, or `dvc status` is not clean afterwards.
    """
    if sh(root, "git", "tag", "--list", tag):
        raise VersioningError(f"{root}: git tag {tag} exists already; rerun to get a new one")
    sh(root, "dvc", "commit", "--force")
    status = json.loads(sh(root, "dvc", "status", "--json") or "{}")
    if status:
        raise VersioningError(f"{root}: after the run `dvc status` is not clean: {json.dumps(status)[:300]}")


def push_data(root: Path) -> None:
    """`dvc push` to the default remote."""
    sh(root, "dvc", "push", "--quiet")


def commit_version(root: Path, tag: str, message: str, uncached: tuple[str, ...] = ()) -> dict:
    """Commit and tag the version; return {tag, commit, committed}.

    The commit holds params.yaml, dvc.lock, the .gitignore files DVC touched and the `uncached`
    outputs (metrics and plots that DVC leaves to git); nothing else of the working tree.
    """
    changed = sh(root, "git", "ls-files", "--modified", "--others", "--exclude-standard").splitlines()
    ours = [PARAMS_FILE, "dvc.lock", *(p for p in changed if p.endswith(".gitignore")), *uncached]
    ours = [p for p in dict.fromkeys(ours) if (root / p).exists()]
    sh(root, "git", "add", "--force", "--", *ours)  # --force: uncached outs may sit in an ignored folder
    paths = sh(root, "git", "diff", "--cached", "--name-only", "--", *ours).splitlines()
    if paths:
        sh(root, "git", "commit", "--quiet", "-m", message, "--", *paths)
    sh(root, "git", "tag", "-a", tag, "-m", message)
    return {"tag": tag, "commit": sh(root, "git", "rev-parse", "HEAD"), "committed": paths}


def push_git(root: Path, tag: str) -> None:
    """Push the branch and the version's tag to `origin`."""
    sh(root, "git", "push", "--quiet", "origin", "HEAD", f"refs/tags/{tag}")


def remote_inside(root: Path) -> bool:
    """True when the DVC default remote is a folder inside `root` (the default `.dvc-remote/`):
    a clone of the repository from a URL has no such data, so only `root` itself can serve it."""
    name = sh(root, "dvc", "remote", "default", check=False)
    url = sh(root, "dvc", "config", f"remote.{name}.url", check=False) if name else ""  # as written, relative to .dvc/
    if not url or "://" in url:
        return False
    path = Path(url) if Path(url).is_absolute() else root / ".dvc" / url
    return path.resolve().is_relative_to(root.resolve())


def fetch_hint(root: Path, tag: str, outs: list[str], pushed: bool = False) -> str:
    """The command another project runs to get this version's data: from git remote `origin` when
    the tag was pushed there (`pushed`) and the DVC remote is outside the repository, else from
    this checkout's folder, where the tag and the data are."""
    url = sh(root, "git", "remote", "get-url", "origin", check=False) if pushed and not remote_inside(root) else ""
    return "\n".join(f"dvc get {url or root.resolve()} {out} --rev {tag} -o {Path(out).name}" for out in outs)
