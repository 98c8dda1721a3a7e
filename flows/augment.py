"""Prefect flow `augment`: the pipeline's stages as tasks, then the run versioned with DVC and git.

Only the Prefect wiring lives here. Each task calls a function of `pipeline.stages` (the same code
`augment <stage>` and `dvc repro` run), cached on the stage's dvc.lock entry as DVC computes it
(`pipeline.lineage`); the version is then recorded by `pipeline.versioning` (dvc.lock, DVC cache
and remote, git commit + tag), with the project's lock from `pipeline.lock` and the rollback of a
failed run from `pipeline.workspace`. Served as `augment/balance` by flows/serve.py.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import INPUTS, NO_CACHE
from prefect.logging.handlers import APILogHandler
from prefect.runtime import flow_run
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field

from flows.artifacts import publish
from pipeline import config, params_file, versioning
from pipeline.launch import torchrun
from pipeline.stages import stage as stage_function
from pipeline.stages.files import set_progress
from pipeline.lineage import StageSpec, output_hashes, read_stages, stage_inputs
from pipeline.lock import hold_outputs, project_lock
from pipeline.workspace import rollback_on_failure, working_dir, write_params

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = Path(".prefect") / "results"  # Prefect task results and cache records, git-ignored
LOCK_REMEDY = "raise lock_timeout"


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
        params_file.build({}, self.overrides, source="overrides")
        path = self.root() / params_file.PARAMS_FILE
        return params_file.load(path if path.is_file() else None, self.overrides)


# ---------------------------------------------------------------------------------------------
# Logs: the library's progress in the run's logs.


@contextlib.contextmanager
def library_logs() -> Iterator[None]:
    """Send the library's `augment` logger to the run's logs (PREFECT_LOGGING_EXTRA_LOGGERS does
    the same when set before Prefect starts; then nothing is added)."""
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


# ---------------------------------------------------------------------------------------------
# Stages: each a task keyed on its dvc.lock entry as DVC computes it now (pipeline.lineage).


@task(cache_policy=INPUTS - "cfg" - "root", persist_result=True)
def stage_task(stage: str, cfg: config.Config, root: Path, inputs: dict) -> dict:
    """Run `pipeline.stages.<stage>(cfg)` (under torchrun when inputs["processes"] > 1); return its
    summary and DVC's hash of each output. A stage function that takes `mapper` gets `task_map`,
    so its units run as mapped tasks on the flow's task runner."""
    processes = inputs.get("processes", 1)
    if processes > 1:
        summary = torchrun(inputs["cmd"], processes)
    else:
        fn = stage_function(stage)
        # a stage with independent units (the evaluation's strategy x seed runs) takes a `mapper`
        mapper = {"mapper": task_map} if "mapper" in inspect.signature(fn).parameters else {}
        summary = fn(cfg, **mapper)
    return {"summary": summary, "outs": output_hashes(root, stage)}


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
    inputs = stage_inputs(root, stage)
    if processes > 1:  # the result depends on the world size (each rank draws its own batches)
        inputs["processes"] = processes
    run = stage_task.with_options(name=stage, task_run_name=stage, result_storage=root / RESULTS)
    logger.info("stage %s", stage)
    result = run(stage, cfg, root, inputs)
    if output_hashes(root, stage) != result["outs"]:
        logger.info("%s: cached outputs changed on disk; running it again", stage)
        result = run.with_options(refresh_cache=True)(stage, cfg, root, inputs)
    return result["summary"]


# ---------------------------------------------------------------------------------------------
# Versioning (pipeline.versioning); the pushes are network I/O, so tasks with retries.


@task(retries=2, retry_delay_seconds=[5, 30], cache_policy=NO_CACHE)
def push_data(root: Path) -> None:
    """`dvc push` to the default remote (network or object store I/O: retried)."""
    versioning.push_data(root)


@task(retries=2, retry_delay_seconds=[5, 30], cache_policy=NO_CACHE)
def push_git(root: Path, tag: str) -> None:
    """Push the branch and the version's tag to `origin` (network I/O: retried)."""
    versioning.push_git(root, tag)


def record_version(root: Path, tag: str, message: str, remote: str | None, git_push: bool,
                   uncached: tuple[str, ...]) -> dict:
    """dvc.lock and the DVC cache, then the remote, then the git commit and tag; return the version
    {tag, commit, remote, committed}. Nothing reaches git before the data is pushed."""
    versioning.commit_data(root, tag)
    if remote:
        push_data(root)
    version = versioning.commit_version(root, tag, message, uncached)
    if git_push:
        push_git(root, tag)
    return dict(version, remote=remote)


# ---------------------------------------------------------------------------------------------
# Scale-out: independent units (the evaluation's strategy x seed runs) as mapped tasks.


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
    remote = versioning.check_project(root, run.push, run.git_push)
    set_progress(False)  # progress goes to the run's logs, not to bars on stderr
    tag = versioning.version_tag(flow_run.get_id())
    owner = f"flow run {flow_run.get_name() or '?'}, pid {os.getpid()}"
    # the project's lock, then the output folders' (as `augment run` takes them): no run of this
    # project, nor any run of another folder writing to the same paths, interleaves with this one
    with library_logs(), project_lock(root, run.lock_timeout, owner, LOCK_REMEDY), working_dir(root):
        with rollback_on_failure(root):
            write_params(root, run.overrides)
            cfg = run.config()  # again: params.yaml may have changed while this run waited for the lock
            with hold_outputs(cfg, run.lock_timeout, LOCK_REMEDY):
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
        version["fetch"] = versioning.fetch_hint(root, tag, list(products), pushed=run.git_push)
        publish(cfg, version)
    get_run_logger().info("version %s; fetch with: %s", tag, version["fetch"])
    return version
