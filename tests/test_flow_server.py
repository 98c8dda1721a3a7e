"""Flow `augment` on a real Prefect server (SQLite, 127.0.0.1, temporary PREFECT_HOME).

The project is copied into a temporary git repo; `python flows/serve.py` serves deployment
`augment/balance` from it and `prefect deployment run ... --watch` drives it, as a user would.
Other runs call the flow in this process against the same server, with project= the copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from conftest import REPO

sys.path.insert(0, str(REPO))

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
# Every stage on tiny settings: a run takes seconds on 2 cores (keys of stages not built yet are
# harmless: they are valid params that no stage reads).
SMALL = {
    "data.long_tail.ratio": 5,
    "train_gan.steps": 20, "train_gan.batch_size": 32, "train_gan.checkpoint_every": 10, "train_gan.sample_every": 10,
    "generate.batch_size": 64, "generate.shard_size": 200,
    "evaluate.seeds": 2, "evaluate.epochs": 1, "evaluate.strategies": ["none", "gan"],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path, api: str) -> dict:
    return dict(
        os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", PREFECT_HOME=str(home), PREFECT_API_URL=api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        PREFECT_RUNNER_POLL_FREQUENCY="2", PREFECT_LOGGING_EXTRA_LOGGERS="augment", DVC_NO_ANALYTICS="1",
        PYTHONUNBUFFERED="1",
    )


def _stop(proc: subprocess.Popen) -> None:
    """SIGINT to the process group we started, then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _wait_for(check, timeout: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what}: process exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"{what}: not ready after {timeout} s:\n{log.read_text()[-3000:]}")


def sh(*cmd: str, cwd: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env or dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}"),
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def project_copy(dest: Path) -> Path:
    """The project's files as git sees them (tracked + untracked-not-ignored) in a new git repo."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    for args in (["init", "-q", "-b", "main"], ["config", "user.name", "augment test"],
                 ["config", "user.email", "test@example.com"], ["add", "-A"], ["commit", "-qm", "project"]):
        sh("git", *args, cwd=dest)
    return dest


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A `prefect server start` on a free port; always stopped at the end."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = _env(home, api)
    log = home / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def healthy() -> bool:
            try:
                return urllib.request.urlopen(f"{api}/health", timeout=2).status == 200
            except OSError:
                return False

        _wait_for(healthy, 180, "prefect server", proc, log)
        yield {"api": api, "home": home, "env": env}
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def served(server, tmp_path_factory):
    """A project copy with `python flows/serve.py` serving augment/balance from it."""
    repo = project_copy(tmp_path_factory.mktemp("served") / "project")
    log = repo.parent / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "flows/serve.py"], cwd=repo, env=server["env"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def registered() -> bool:
            return sh(str(BIN / "prefect"), "deployment", "inspect", "augment/balance", cwd=repo,
                      env=server["env"], check=False).returncode == 0

        _wait_for(registered, 120, "flows/serve.py", proc, log)
        yield dict(server, repo=repo, log=log, stop=lambda: _stop(proc))
    finally:
        _stop(proc)


def test_one_ctrl_c_stops_serving_cleanly(server, tmp_path):
    """`make serve`, then one Ctrl-C (SIGINT to its process group): exits 0 within seconds, no traceback."""
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(REPO / "flows" / "serve.py"), "--name", "ctrl-c"],
                                env=server["env"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(lambda: "serv" in log.read_text(), 120, "flows/serve.py", proc, log)
        time.sleep(3)  # well inside the runner's polling loop
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        _stop(proc)
    text = log.read_text()
    assert "Traceback" not in text and text.rstrip().endswith("stopped"), text


def deployment_run(served: dict, overrides: dict, **params) -> tuple[subprocess.CompletedProcess, str]:
    """`prefect deployment run augment/balance --params ... --watch`; (process, flow run id)."""
    payload = json.dumps({"overrides": overrides, **params})
    proc = sh(str(BIN / "prefect"), "deployment", "run", "augment/balance", "--params", payload, "--watch",
              "--watch-timeout", "400", cwd=served["repo"], env=served["env"], check=False)
    found = re.search(r"UUID: ([0-9a-f-]{36})", proc.stdout)
    assert found, f"no flow run id in:\n{proc.stdout}\n{proc.stderr}"
    return proc, found.group(1)


def client(api: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    class _Client:
        def __enter__(self):
            self._settings = temporary_settings(updates={PREFECT_API_URL: api})
            self._settings.__enter__()
            self._client = get_client(sync_client=True)
            return self._client.__enter__()

        def __exit__(self, *exc):
            self._client.__exit__(*exc)
            self._settings.__exit__(*exc)

    return _Client()


def flow_run_info(api: str, run_id: str) -> dict:
    """State, state message, task run states and artifacts of one flow run."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId

    with client(api) as c:
        fr = c.read_flow_run(uuid.UUID(run_id))
        tasks = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[fr.id])))
        arts = c.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[fr.id])))
    return {
        "state": fr.state.type.value, "message": fr.state.message or "",
        "tasks": {t.name: t.state.name for t in tasks},
        "artifacts": {a.key: a for a in arts},
    }


def _sha(path: Path) -> dict[str, str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def tags(repo: Path) -> list[str]:
    return sh("git", "tag", "--list", "augment-*", cwd=repo).stdout.split()


def product(repo: Path) -> str:
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    return "data/synthetic" if "generate" in stages else "data/plan.json"


def assert_clean(repo: Path) -> None:
    assert "up to date" in sh("dvc", "status", cwd=repo).stdout.lower()
    assert sh("git", "status", "--porcelain", "--untracked-files=no", cwd=repo).stdout == ""
    sh("git", "fsck", "--no-progress", cwd=repo)


def test_deployment_run_versions_the_data_and_another_repo_fetches_it(served, tmp_path):
    repo = served["repo"]
    proc, run_id = deployment_run(served, dict(SMALL, **{"plan.sampling_strategy": "minority"}))
    info = flow_run_info(served["api"], run_id)
    assert info["state"] == "COMPLETED", f"{info}\n{proc.stdout[-2000:]}\n{served['log'].read_text()[-4000:]}"

    # the version: one tag on a commit whose params and dvc.lock are the run's, data pushed
    (tag,) = tags(repo)
    assert sh("git", "rev-parse", f"{tag}^{{commit}}", cwd=repo).stdout == sh("git", "rev-parse", "HEAD", cwd=repo).stdout
    assert yaml.safe_load((repo / "params.yaml").read_text())["plan"]["sampling_strategy"] == "minority"
    assert_clean(repo)
    assert (repo / ".dvc-remote").is_dir()

    # the report artifact names the tag and how to fetch it; the figures table is there too
    report = info["artifacts"]["augment-report"].data
    assert tag in report and f"--rev {tag}" in report
    assert "augment-figures" in info["artifacts"]

    # another project takes the version by tag, from the remote (the source's cache is gone)
    shutil.rmtree(repo / ".dvc" / "cache")
    sh("dvc", "get", str(repo), product(repo), "--rev", tag, "-o", str(tmp_path / "got"), cwd=tmp_path)
    got, src = tmp_path / "got", repo / product(repo)
    assert _sha(got) == _sha(src) and _sha(src)
    if src.name == "synthetic":
        manifest = json.loads((got / "manifest.json").read_text())
        plan = json.loads((repo / "data" / "plan.json").read_text())
        assert sum(f["rows"] for f in manifest["files"]) == sum(plan.values()) > 0
        assert sum(1 for n in plan.values() if n) == 1  # minority: one class
    sh("dvc", "fetch", cwd=repo)  # put the cache back for the next tests


@pytest.fixture
def in_process(server):
    """Flow runs called in this process report to the test server."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: server["api"], PREFECT_HOME: str(server["home"])}):
        yield


def snapshot(repo: Path) -> tuple:
    """What a failed run must leave as it was: HEAD, the tags, params.yaml, dvc.lock."""
    return (sh("git", "rev-parse", "HEAD", cwd=repo).stdout, tuple(tags(repo)),
            (repo / "params.yaml").read_bytes(), (repo / "dvc.lock").read_bytes())


def test_rerun_with_the_same_params_is_served_from_cache(served, in_process):
    from flows.augment import augment

    repo = served["repo"]
    params = dict(SMALL, **{"plan.sampling_strategy": "minority"})  # as the first test: probably cached already
    assert augment(overrides=params, project=str(repo), return_state=True).is_completed()
    state = augment(overrides=params, project=str(repo), return_state=True)
    assert state.is_completed()
    info = flow_run_info(served["api"], str(state.state_details.flow_run_id))
    stage_tasks = {n: s for n, s in info["tasks"].items() if not n.startswith("push_data")}
    assert stage_tasks and set(stage_tasks.values()) == {"Cached"}, info["tasks"]
    assert "augment-report" in info["artifacts"]
    assert_clean(repo)


def test_bad_override_fails_the_run_before_any_work(served, in_process):
    from flows.augment import augment

    repo = served["repo"]
    before = snapshot(repo)
    state = augment(overrides={"train_gan.stepz": 5}, project=str(repo), return_state=True)
    assert state.is_failed()
    assert "overrides: unknown key 'train_gan.stepz' (did you mean 'train_gan.steps'?)" in state.message
    assert flow_run_info(served["api"], str(state.state_details.flow_run_id))["tasks"] == {}  # nothing ran
    assert snapshot(repo) == before
    assert_clean(repo)


def test_a_failed_run_leaves_the_previous_version_untouched(served, in_process):
    from flows.augment import augment

    repo = served["repo"]
    before = snapshot(repo)
    # valid config, but the plan stage refuses it: prepare has run (and rewritten data/) by then
    state = augment(overrides=dict(SMALL, **{"data.long_tail.ratio": 7, "plan.sampling_strategy": {"0": 1}}),
                    project=str(repo), return_state=True)
    assert state.is_failed() and "below the" in state.message
    assert snapshot(repo) == before
    assert_clean(repo)  # outputs put back to the version's


def test_a_run_waiting_too_long_for_the_lock_fails_cleanly(served, in_process):
    from flows.augment import LOCK_REMEDY, augment
    from pipeline.lock import project_lock

    repo = served["repo"]
    before = snapshot(repo)
    with project_lock(repo, 0, "a test", LOCK_REMEDY):  # as another run would
        state = augment(overrides={"plan.sampling_strategy": "not majority"}, project=str(repo), lock_timeout=1,
                        return_state=True)
    assert state.is_failed() and "another augment run" in state.message and "raise lock_timeout" in state.message
    assert snapshot(repo) == before
    assert_clean(repo)


def test_two_concurrent_runs_take_turns_and_each_version_is_whole(served, in_process, tmp_path):
    from flows.augment import LOCK_REMEDY
    from pipeline.lock import project_lock

    repo = served["repo"]
    before = set(tags(repo))
    cmd = [str(BIN / "prefect"), "deployment", "run", "augment/balance", "--watch", "--watch-timeout", "400", "--params"]
    # two plans that cannot be mistaken for each other; `a` trains the GAN with 2 DDP processes (gloo)
    runs = {"a": {"overrides": dict(SMALL, **{"plan.sampling_strategy": "not majority"}), "train_processes": 2},
            "b": {"overrides": dict(SMALL, **{"plan.sampling_strategy": {"0": 500}})}}
    waits = served["log"].read_text().count("another augment run holds")
    # The test holds the project's lock until both runs wait on it, so they overlap however the
    # runner's polls and this host's speed fall (left to timing, a quick run could end first).
    with project_lock(repo, 0, "a test", LOCK_REMEDY):  # as another run would
        procs = {k: subprocess.Popen([*cmd, json.dumps(params)], cwd=repo, env=served["env"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for k, params in runs.items()}
        deadline = time.monotonic() + 300
        while served["log"].read_text().count("another augment run holds") < waits + 2:
            assert time.monotonic() < deadline, f"both runs should wait on the lock:\n{served['log'].read_text()[-4000:]}"
            assert all(p.poll() is None for p in procs.values()), served["log"].read_text()[-4000:]
            time.sleep(1)
    outs = {k: p.communicate(timeout=500)[0] for k, p in procs.items()}
    assert all(p.returncode == 0 for p in procs.values()), (outs, served["log"].read_text()[-4000:])
    new = [t for t in tags(repo) if t not in before]
    assert len(new) == 2
    log = served["log"].read_text()
    assert "torchrun: 2 processes: augment train-gan" in log and "train_processes: 2" in sh("git", "log", "--format=%B", cwd=repo).stdout
    # one history, each tag's plan is its own run's plan (nothing interleaved)
    first, second = sorted(new, key=lambda t: int(sh("git", "rev-list", "--count", t, cwd=repo).stdout))
    assert sh("git", "merge-base", "--is-ancestor", first, second, cwd=repo).returncode == 0
    for t in new:
        params = yaml.safe_load(sh("git", "show", f"{t}:params.yaml", cwd=repo).stdout)
        sh("dvc", "get", str(repo), "data/plan.json", "--rev", t, "-o", str(tmp_path / t), cwd=tmp_path)
        plan = json.loads((tmp_path / t).read_text())
        if params["plan"]["sampling_strategy"] == {"0": 500}:
            assert {c for c, n in plan.items() if n} == {"0"}
        else:
            assert params["plan"]["sampling_strategy"] == "not majority" and sum(1 for n in plan.values() if n) > 1
    assert_clean(repo)


def _evaluate_unit(unit: tuple[str, int], tables: dict, add) -> tuple[int, "object"]:
    """One (strategy, seed) of the evaluation, single-threaded so every process computes the same."""
    import torch

    from pipeline.config import EvaluateConfig
    from pipeline.evaluate import run_strategy

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # fp32: `auto` is decided in each process by a quick bf16/fp32 timing, which a loaded machine
        # can flip, and a bf16 worker's p_true differs from an fp32 reference at 1e-4
        cfg = EvaluateConfig(epochs=1, seeds=2, strategies=["none", "class_weight"], device="cpu", precision="fp32")
        return os.getpid(), run_strategy(unit[0], cfg, tables, add, unit[1], None)
    finally:
        torch.set_num_threads(threads)


def test_dask_task_runner_maps_evaluation_over_a_local_cluster(in_process):
    from functools import partial

    import numpy as np
    from distributed import Client, LocalCluster
    from prefect import flow
    from prefect_dask import DaskTaskRunner

    from conftest import tiny_arrays
    from flows.augment import task_map
    from pipeline.data import ImageTable

    names = ("a", "b", "c")
    tables = {split: ImageTable(*tiny_arrays(counts, seed=seed), names)
              for split, counts, seed in (("train", (24, 10, 5), 0), ("val", (4, 4, 4), 1), ("test", (6, 6, 6), 2))}
    fn = partial(_evaluate_unit, tables=tables, add=np.array([0, 14, 19]))
    units = [(s, seed) for s in ("none", "class_weight") for seed in (0, 1)]
    # a cluster of two worker processes, reached by address as `flows/serve.py --dask ADDRESS` does
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as dask_client:
        dask_client.wait_for_workers(2, timeout=120)

        @flow(task_runner=DaskTaskRunner(address=cluster.scheduler_address))
        def evaluate_on_dask(units: list) -> list:
            return task_map(fn, units, name="evaluate")

        mapped = evaluate_on_dask(units)
    pids = [pid for pid, _ in mapped]
    assert len(set(pids)) == 2 and os.getpid() not in pids, pids  # both workers of the cluster took units
    for unit, (_, got) in zip(units, mapped):
        _, expected = fn(unit)  # the same unit here, in this process
        assert got.equals(expected), (unit, got.compare(expected))
        assert set(got["strategy"]) == {unit[0]} and set(got["seed"]) == {unit[1]}


def test_prefect_yaml_deploys_balance_to_a_process_pool_and_a_worker_runs_it(served):
    """Last in this module: the deployment it makes replaces the served `augment/balance`."""
    prefect, repo, env = str(BIN / "prefect"), served["repo"], dict(served["env"], PWD=str(served["repo"]))
    served["stop"]()
    before = set(tags(repo))
    sh(prefect, "work-pool", "create", "augment-process", "--type", "process", cwd=repo, env=env)
    sh(prefect, "--no-prompt", "deploy", "--name", "balance", cwd=repo, env=env)
    with client(served["api"]) as c:
        d = c.read_deployment_by_name("augment/balance")
    assert d.work_pool_name == "augment-process" and d.entrypoint == "flows/augment.py:augment"
    assert d.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(repo)}}]
    assert {"overrides", "lock_timeout", "push", "git_push", "train_processes"} <= set(d.parameter_openapi_schema["properties"])

    params = {"overrides": dict(SMALL, **{"plan.sampling_strategy": "minority"})}  # as the first run: cached stages
    run = sh(prefect, "deployment", "run", "augment/balance", "--params", json.dumps(params), cwd=repo, env=env)
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", run.stdout).group(1)
    sh(prefect, "worker", "start", "--pool", "augment-process", "--run-once", cwd=repo.parent, env=env)
    info = flow_run_info(served["api"], run_id)
    assert info["state"] == "COMPLETED", info
    assert len(set(tags(repo)) - before) == 1
    assert_clean(repo)

