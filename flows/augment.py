"""Prefect flow `augment`: the pipeline's stages as tasks, then the run versioned with DVC and git.

Each task calls a function of `pipeline.stages` (the same code `augment <stage>` and `dvc repro`
run); the run's params and output hashes then go to `dvc.lock`, the data to the DVC cache and
remote, and a git commit + tag name the version. Served as `augment/balance` by flows/serve.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import inspect
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import INPUTS, NO_CACHE
from prefect.runtime import flow_run
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field

from pipeline import config, io, stages
from pipeline.lock import HELD_ENV, LockBusy, hold, hold_outputs
from pipeline.errors import AugmentError, ConfigError, TrainingError

PROJECT = Path(__file__).resolve().parents[1]
PARAMS = "params.yaml"
LOCK = Path(".dvc") / "tmp" / "augment-flow.lock"  # .dvc/tmp is git-ignored by DVC itself
LOCK_OWNER = LOCK.with_suffix(".owner")
PENDING = LOCK.with_suffix(".pending.json")  # what a run in progress must put back if it fails
RESULTS = Path(".prefect") / "results"  # Prefect task results and cache records, git-ignored
TAG_PREFIX = "augment-"
log = logging.getLogger("augment")


class RepositoryBusy(LockBusy):
    """Another run holds the project's lock for longer than this run's `lock_timeout`."""


class VersioningError(AugmentError):
    """A git or DVC command failed while recording the run's version."""


# ---------------------------------------------------------------------------------------------
# Parameters: validated before any work starts.


class RunParameters(BaseModel):
    """What a run of flow `augment` takes; the flow's keyword parameters are exactly these fields."""

    model_config = ConfigDict(extra="forbid")

    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="params.yaml values to change, as dotted keys (the CLI's --set), "
        'e.g. {"train_gan.steps": 500}; written to params.yaml and committed with the version',
    )
    lock_timeout: float = Field(
        600.0, ge=0, description="seconds to wait while another run holds this project; then fail"
    )
    push: bool = Field(True, description="push the data to the DVC default remote")
    git_push: bool = Field(
        False, description="push the commit and tag to git remote `origin` (runs in a throwaway clone: "
        "Docker and Kubernetes workers)"
    )
    train_processes: int = Field(
        1, ge=1, description="GAN training processes: > 1 launches `torchrun --nproc_per_node N` (one per GPU)"
    )
    project: str | None = Field(
        None, description="folder of the git + DVC project; default: the checkout holding this flow"
    )

    def root(self) -> Path:
        """The project folder, absolute."""
        return Path(self.project).resolve() if self.project else PROJECT

    def config(self) -> config.Config:
        """The run's typed config: the project's params.yaml with `overrides` applied.

        Raises:
            ConfigError: one line naming the bad key or value and the valid choices.
        """
        # Checked alone first, so an error names the overrides rather than params.yaml.
        config.build({}, self.overrides, source="overrides")
        path = self.root() / PARAMS
        return config.load(path if path.is_file() else None, self.overrides)


# ---------------------------------------------------------------------------------------------
# The project: git + DVC, one run at a time.


def _dvc() -> str:
    """The `dvc` of this Python environment (the one whose API `read_stages` uses), else PATH's."""
    beside = Path(sys.executable).with_name("dvc")
    return str(beside) if beside.is_file() else (shutil.which("dvc") or "dvc")


def sh(root: Path, *cmd: str, check: bool = True) -> str:
    """Run `cmd` in `root`; return its stdout; a failure raises `VersioningError` with its stderr
    (or, with check=False, returns "")."""
    cmd = (_dvc(), *cmd[1:]) if cmd[0] == "dvc" else cmd
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True,
                          env=dict(os.environ, DVC_NO_ANALYTICS="1"))
    if proc.returncode != 0:
        if not check:
            return ""
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        shown = " ".join([Path(cmd[0]).name, *cmd[1:3]])
        raise VersioningError(f"{root}: `{shown}` failed ({proc.returncode}): {tail}")
    return proc.stdout.strip()


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


@contextlib.contextmanager
def project_lock(root: Path, timeout: float) -> Iterator[None]:
    """Hold the project's lock (params.yaml, dvc.lock, git: `pipeline.lock.hold`); wait up to
    `timeout` s for another run, then `RepositoryBusy` naming the holder."""
    owner = (root / LOCK_OWNER, f"flow run {flow_run.get_name() or '?'}, pid {os.getpid()}")
    with hold([root / LOCK], timeout, "raise lock_timeout", owner=owner, error=RepositoryBusy):
        yield


@contextlib.contextmanager
def working_dir(root: Path) -> Iterator[None]:
    """Run in `root`: stage paths in params.yaml (and the data source) are relative to it."""
    before = Path.cwd()
    os.chdir(root)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def library_logs() -> Iterator[None]:
    """Send the library's `augment` logger to the run's logs (PREFECT_LOGGING_EXTRA_LOGGERS does
    the same when set before Prefect starts; then nothing is added)."""
    from prefect.logging.handlers import APILogHandler

    lib = logging.getLogger("augment")
    added = None if any(isinstance(h, APILogHandler) for h in lib.handlers) else APILogHandler()
    level = lib.level
    lib.setLevel(logging.INFO)
    if added:
        lib.addHandler(added)
    try:
        yield
    finally:
        lib.setLevel(level)
        if added:
            lib.removeHandler(added)


def _restore(root: Path, record: dict) -> None:
    """Put params.yaml and dvc.lock back as `record` saved them, then the outputs dvc.lock names."""
    if sh(root, "git", "rev-parse", "--verify", "--quiet", "HEAD", check=False) != record["head"]:
        return  # the version was committed: the working tree matches it already
    for name, text in record["files"].items():
        if text is None:
            (root / name).unlink(missing_ok=True)
        elif not (root / name).is_file() or (root / name).read_text(encoding="utf-8") != text:
            io.write_text(root / name, text)
    if record["files"].get("dvc.lock") is not None:
        proc = subprocess.run([_dvc(), "checkout", "--force"], cwd=root, capture_output=True, text=True)
        if proc.returncode != 0:
            log.warning("`dvc checkout` could not put the outputs back: %s", proc.stderr.strip())


def restore_interrupted(root: Path) -> bool:
    """Undo what a killed run left half-done (its record survives it); True if there was one."""
    if not (root / PENDING).is_file():
        return False
    log.warning("a previous run on %s was interrupted; putting back params.yaml, dvc.lock and the outputs", root)
    _restore(root, json.loads((root / PENDING).read_text(encoding="utf-8")))
    (root / PENDING).unlink()
    return True


@contextlib.contextmanager
def rollback_on_failure(root: Path) -> Iterator[None]:
    """On any failure put back params.yaml, dvc.lock and the outputs of the last version.

    Nothing in git, the DVC cache or the remote is changed before the run has succeeded, so the
    previous version stays whole; this makes the working tree match it again. What to put back is
    also written to .dvc/tmp first, so a run killed outright is undone by the next one.
    """
    restore_interrupted(root)
    files = {n: (root / n).read_text(encoding="utf-8") if (root / n).is_file() else None for n in (PARAMS, "dvc.lock")}
    record = {"head": sh(root, "git", "rev-parse", "--verify", "--quiet", "HEAD", check=False), "files": files}
    io.write_json(root / PENDING, record)
    try:
        yield
    except BaseException:
        _restore(root, record)
        raise
    finally:
        (root / PENDING).unlink(missing_ok=True)


def write_params(root: Path, overrides: dict[str, Any]) -> None:
    """Apply `overrides` to params.yaml in place, keeping its comments (ruamel round trip)."""
    if not overrides:
        return
    from ruamel.yaml import YAML

    yaml = YAML()
    # keep `null` spelled out, as in the file we were given (ruamel writes an empty value)
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    path = root / PARAMS
    tree = yaml.load(path.read_text(encoding="utf-8")) if path.is_file() else None
    tree = tree if tree is not None else {}
    for key, value in overrides.items():
        config.set_dotted(tree, key, value)
    with io.atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        yaml.dump(tree, f)


# ---------------------------------------------------------------------------------------------
# Stages: dvc.yaml says what each reads and writes; the cache key is built from that.


@dataclass(frozen=True)
class StageSpec:
    """One dvc.yaml stage with templates resolved: what it reads (files, params) and writes."""

    name: str
    cmd: str
    deps: tuple[str, ...]
    params: tuple[str, ...]  # dotted params.yaml keys; "" means the whole file
    outs: tuple[str, ...]
    uncached: tuple[str, ...] = ()  # outs with `cache: false` (metrics, plots): git keeps them


def read_stages(root: Path) -> dict[str, StageSpec]:
    """The stages of `root/dvc.yaml` (resolved by DVC itself), in file order."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    specs = {}
    with Repo(str(root)) as repo:
        for s in repo.index.stages:
            params = [p for d in s.deps if isinstance(d, ParamsDependency) for p in (list(d.params) or [""])]
            deps = [d.def_path for d in s.deps if not isinstance(d, ParamsDependency)]
            outs = tuple(o.def_path for o in s.outs)
            uncached = tuple(o.def_path for o in s.outs if not o.use_cache)
            specs[s.name] = StageSpec(s.name, str(s.cmd), tuple(deps), tuple(params), outs, uncached)
    return specs


def hash_path(path: Path) -> str | None:
    """sha256 of a file, or of a folder's (relative path, file sha256) list; None if absent.

    Folders skip `__pycache__`: `pipeline/models` as a dependency is its sources.
    """
    if path.is_file():
        return io.sha256_file(path)
    if not path.is_dir():
        return None
    h = hashlib.sha256()
    # bytecode caches come and go with imports, not with the code
    for p in sorted(q for q in path.rglob("*") if q.is_file() and "__pycache__" not in q.parts):
        h.update(f"{p.relative_to(path).as_posix()}\0{io.sha256_file(p)}\n".encode())
    return h.hexdigest()


def _param(tree: dict, dotted: str) -> Any:
    node: Any = tree
    for part in filter(None, dotted.split(".")):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def fingerprint(spec: StageSpec, cfg: config.Config, root: Path) -> dict:
    """What a stage's result depends on, as DVC sees it: its command, params, deps' content, outs.

    Two runs with equal fingerprints produce the same outputs, so the task cache is keyed on it.
    """
    tree = config.dump(cfg)
    return {
        "stage": spec.name,
        "cmd": spec.cmd,
        "params": {key or "*": _param(tree, key) for key in spec.params},
        "deps": {d: hash_path(root / d) for d in spec.deps},
        "outs": list(spec.outs),
    }


def torchrun(stage: str, processes: int) -> dict:
    """`augment <stage>` in `processes` processes under torchrun (DDP: one per GPU, gloo on CPU).

    The CLI reads ./params.yaml, which holds this run's params, and calls the same stage function.
    """
    from pipeline.cli import STAGES

    command = {fn: name for name, fn in STAGES.items()}[stage]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    # the ranks must not wait for the output folders' locks: this flow run holds them for them
    proc = subprocess.run([*launch, "-m", "pipeline.cli", command, "-q"], capture_output=True, text=True,
                          env=dict(os.environ, **{HELD_ENV: "1"}))
    for line in (proc.stdout + proc.stderr).splitlines()[-40:]:
        log.info("torchrun: %s", line)
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        raise TrainingError(f"torchrun --nproc_per_node={processes} augment {command} failed ({proc.returncode}): "
                            f"{errors[-1] if errors else 'see the run log'}")
    return {"processes": processes}


@task(cache_policy=INPUTS - "cfg", persist_result=True)
def stage_task(stage: str, cfg: config.Config, inputs: dict) -> dict:
    """Run `pipeline.stages.<stage>(cfg)` (under torchrun when inputs["processes"] > 1); return its
    summary and the sha256 of each output. A stage function that takes `mapper` gets `task_map`,
    so its units run as mapped tasks on the flow's task runner."""
    processes = inputs.get("processes", 1)
    if processes > 1:
        summary = torchrun(stage, processes)
    else:
        fn = getattr(stages, stage)
        # a stage with independent units (evaluation runs, generation shards) takes a `mapper`
        mapper = {"mapper": task_map} if "mapper" in inspect.signature(fn).parameters else {}
        summary = fn(cfg, **mapper)
    return {"summary": summary, "outs": {o: hash_path(Path(o)) for o in inputs["outs"]}}


def run_stage(stage: str, cfg: config.Config, specs: dict[str, StageSpec], root: Path, processes: int = 1) -> Any:
    """Run one stage as a cached task; return the stage function's summary (None if skipped).

    The flow versions exactly what dvc.yaml declares, so a stage that dvc.yaml lacks is skipped
    with a warning. A cache hit whose outputs are no longer on disk as the cached run left them
    (deleted, or put back by a failed run's rollback) runs the stage again.
    """
    logger = get_run_logger()
    if stage not in specs:
        logger.warning("dvc.yaml has no stage %r: skipped", stage)
        return None
    inputs = fingerprint(specs[stage], cfg, root)
    if processes > 1:  # the result depends on the world size (each rank draws its own batches)
        inputs["processes"] = processes
    run = stage_task.with_options(name=stage, task_run_name=stage, result_storage=root / RESULTS)
    logger.info("stage %s", stage)
    result = run(stage, cfg, inputs)
    if any(hash_path(root / o) != h for o, h in result["outs"].items()):
        logger.info("%s: cached outputs changed on disk; running it again", stage)
        result = run.with_options(refresh_cache=True)(stage, cfg, inputs)
    return result["summary"]


# ---------------------------------------------------------------------------------------------
# Versioning: dvc.lock + DVC cache/remote + git commit and tag.


@task(retries=2, retry_delay_seconds=[5, 30], cache_policy=NO_CACHE)
def push_data(root: Path) -> None:
    """`dvc push` to the default remote (network or object store I/O: retried)."""
    sh(root, "dvc", "push", "--quiet")


@task(retries=2, retry_delay_seconds=[5, 30], cache_policy=NO_CACHE)
def push_git(root: Path, tag: str) -> None:
    """Push the branch and the version's tag to `origin` (network I/O: retried)."""
    sh(root, "git", "push", "--quiet", "origin", "HEAD", f"refs/tags/{tag}")


def version_tag(run_id: str | None, now: dt.datetime | None = None) -> str:
    """`augment-<YYYY-MM-DD>-<first 6 hex of the flow run id>` (UTC date)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    short = (run_id or os.urandom(3).hex()).replace("-", "")[:6]
    return f"{TAG_PREFIX}{now:%Y-%m-%d}-{short}"


def record_version(root: Path, tag: str, message: str, remote: str | None, git_push: bool = False,
                   uncached: tuple[str, ...] = ()) -> dict:
    """Write dvc.lock from the outputs on disk, push the data to `remote`, commit and tag; return the version.

    The commit holds params.yaml, dvc.lock, the .gitignore files DVC touched and the `uncached`
    outputs (metrics and plots that DVC leaves to git); nothing else of the working tree.
    """
    if sh(root, "git", "tag", "--list", tag):
        raise VersioningError(f"{root}: git tag {tag} exists already; rerun to get a new one")
    sh(root, "dvc", "commit", "--force")
    status = json.loads(sh(root, "dvc", "status", "--json") or "{}")
    if status:
        raise VersioningError(f"{root}: after the run `dvc status` is not clean: {json.dumps(status)[:300]}")
    if remote:
        push_data(root)
    changed = sh(root, "git", "ls-files", "--modified", "--others", "--exclude-standard").splitlines()
    ours = [PARAMS, "dvc.lock", *(p for p in changed if p.endswith(".gitignore")), *uncached]
    ours = [p for p in dict.fromkeys(ours) if (root / p).exists()]
    sh(root, "git", "add", "--force", "--", *ours)  # --force: uncached outs may sit in an ignored folder
    paths = sh(root, "git", "diff", "--cached", "--name-only", "--", *ours).splitlines()
    if paths:
        sh(root, "git", "commit", "--quiet", "-m", message, "--", *paths)
    sh(root, "git", "tag", "-a", tag, "-m", message)
    if git_push:
        push_git(root, tag)
    return {"tag": tag, "commit": sh(root, "git", "rev-parse", "HEAD"), "remote": remote, "committed": paths}


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


# ---------------------------------------------------------------------------------------------
# What the run shows in the UI: the report and key figures as artifacts.


def _fmt(stat: dict | None) -> str:
    """`0.812 [0.790, 0.834]` from a metrics.json {mean, ci95} entry."""
    if not stat or stat.get("mean") is None:
        return "n/a"
    lo, hi = stat.get("ci95") or (None, None)
    ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
    return f"{stat['mean']:.3f}{ci}"


def report_markdown(plan: dict[str, int], metrics: dict | None, version: dict) -> str:
    """The run's markdown artifact: the report's verdict and strategy tables, the plan, the version."""
    from pipeline.report import render_markdown, summary_blocks

    lines = [f"# augment version `{version['tag']}`", ""]
    if metrics:
        lines.append(render_markdown(summary_blocks(metrics)))
    else:
        lines.append("No downstream evaluation in this pipeline: no verdict.")
    lines += ["", "## Plan: images to add per class", "", "| class | images to add |", "| --- | --- |"]
    lines += [f"| {c} | {n} |" for c, n in plan.items()]
    lines += ["", "## Version", "", f"- git tag `{version['tag']}`, commit `{version['commit'][:12]}`",
              f"- DVC remote: `{version['remote'] or 'not pushed (push=false)'}`", "",
              "Fetch it from another project:", "", "```bash", version["fetch"], "```"]
    return "\n".join(lines) + "\n"


def key_figures(plan: dict[str, int], metrics: dict | None, version: dict) -> list[dict]:
    """Rows {figure, value} for the table artifact."""
    rows = [{"figure": "images added", "value": sum(plan.values())},
            {"figure": "classes topped up", "value": sum(1 for n in plan.values() if n)}]
    if metrics:
        from pipeline.report import verdict

        gain = metrics.get("gain") or {}
        rows.append({"figure": "verdict", "value": verdict(metrics)})
        rows.append({"figure": f"balanced accuracy gain over {gain.get('baseline')}",
                     "value": _fmt(gain.get("balanced_accuracy"))})
        for name, m in (metrics.get("strategies") or {}).items():
            rows.append({"figure": f"{name}: balanced accuracy", "value": _fmt(m.get("balanced_accuracy"))})
        for k, v in (metrics.get("gan_quality") or {}).items():
            if isinstance(v, (int, float)):
                rows.append({"figure": f"GAN {k}", "value": round(float(v), 4)})
    rows.append({"figure": "version", "value": version["tag"]})
    return rows


def publish(cfg: config.Config, version: dict) -> None:
    """The report as a markdown artifact and the key figures as a table artifact."""
    plan = json.loads(Path(cfg.paths.plan).read_text(encoding="utf-8"))
    metrics_path = Path(cfg.paths.reports) / "metrics.json"
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else None
    create_markdown_artifact(report_markdown(plan, metrics, version), key="augment-report",
                             description=f"augment report, version {version['tag']}")
    create_table_artifact(key_figures(plan, metrics, version), key="augment-figures",
                          description=f"key figures, version {version['tag']}")


# ---------------------------------------------------------------------------------------------
# Scale-out: independent units (evaluation strategy x seed, generation shards) as mapped tasks.


def task_runner() -> TaskRunner:
    """Threads by default; with AUGMENT_DASK=<scheduler address> (or `local`) a Dask cluster.

    Read when this module is imported, so `flows/serve.py --dask ADDRESS` and a work pool's
    `env` both reach the runs' subprocesses.
    """
    where = os.environ.get("AUGMENT_DASK", "").strip()
    if not where:
        return ThreadPoolTaskRunner()
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner() if where == "local" else DaskTaskRunner(address=where)


@task(cache_policy=NO_CACHE)
def run_unit(fn: Callable[[Any], Any], unit: Any) -> Any:
    """`fn(unit)`: one independent piece of a stage, on whichever worker the task runner picks."""
    return fn(unit)


def task_map(fn: Callable[[Any], Any], units: list, name: str = "unit") -> list:
    """`[fn(u) for u in units]` as mapped tasks of the current flow; results in the order of `units`.

    A stage that accepts a `mapper` runs its independent units through this, so they spread over
    the flow's task runner (a Dask cluster with AUGMENT_DASK) instead of running one by one.
    """
    futures = run_unit.with_options(name=name).map(unmapped(fn), units)
    return [f.result() for f in futures]


# ---------------------------------------------------------------------------------------------
# The flow.


@flow(name="augment", task_runner=task_runner(),
      description="Balance an imbalanced image dataset with a class-conditional GAN; version the result.")
def augment(
    overrides: dict[str, Any] | None = None,
    lock_timeout: float = 600.0,
    push: bool = True,
    git_push: bool = False,
    train_processes: int = 1,
    project: str | None = None,
) -> dict:
    """prepare -> plan -> train_gan -> generate -> evaluate -> report, then versioned with DVC + git.

    Parameters are those of `RunParameters`; a bad one fails the run before any work.

    Returns:
        The version: {tag, commit, remote, committed, fetch}.
    """
    run = RunParameters(overrides=overrides or {}, lock_timeout=lock_timeout, push=push, git_push=git_push,
                        train_processes=train_processes, project=project)
    root = run.root()
    run.config()  # a bad override fails the run here, before any work or lock
    remote = check_project(root, run.push, run.git_push)
    stages.set_progress(False)  # progress goes to the run's logs, not to bars on stderr
    tag = version_tag(flow_run.get_id())
    # the project's lock, then the output folders' (as `augment run` takes them): no run of this
    # project, nor any run of another folder writing to the same paths, interleaves with this one
    with library_logs(), project_lock(root, run.lock_timeout), working_dir(root):
        with rollback_on_failure(root):
            write_params(root, run.overrides)
            cfg = run.config()  # again: params.yaml may have changed while this run waited for the lock
            with hold_outputs(cfg, run.lock_timeout, "raise lock_timeout"):
                specs = read_stages(root)
                run_stage("prepare", cfg, specs, root)
                run_stage("plan", cfg, specs, root)
                run_stage("train_gan", cfg, specs, root, processes=run.train_processes)
                run_stage("generate", cfg, specs, root)
                run_stage("evaluate", cfg, specs, root)
                run_stage("report", cfg, specs, root)
                message = (f"augment: version {tag} (flow run {flow_run.get_name()})\n\n"
                           f"overrides: {json.dumps(run.overrides)}\ntrain_processes: {run.train_processes}")
                uncached = tuple(o for spec in specs.values() for o in spec.uncached)
                version = record_version(root, tag, message, remote, run.git_push, uncached)
        products = specs["generate"].outs if "generate" in specs else specs[list(specs)[-1]].outs
        version["fetch"] = fetch_hint(root, tag, list(products), pushed=run.git_push)
        publish(cfg, version)
    get_run_logger().info("version %s; fetch with: %s", tag, version["fetch"])
    return version
