"""Flow `augment` pieces without a Prefect server: parameters, params.yaml writes, cache keys read
from DVC, the project lock, preflight checks, rollback and the artifacts' text. The runs themselves
are in test_flow_server.py (a real server)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO

sys.path.insert(0, str(REPO))  # `flows` is a folder of the project, not an installed package

from flows import artifacts  # noqa: E402
from flows import augment as fa  # noqa: E402
from pipeline import lineage, versioning, workspace  # noqa: E402
from pipeline.errors import ConfigError  # noqa: E402
from pipeline.lock import PROJECT_OWNER, RepositoryBusy, project_lock  # noqa: E402

PARAMS = """\
paths:
  prepared: data/prepared   # where prepare writes
  plan: data/plan.json
data:
  source: digits
  image_size: null          # keep the source's size
  long_tail:
    ratio: 10
plan:
  sampling_strategy: auto   # imbalanced-learn semantics
"""


def test_bad_override_names_the_key_and_the_valid_ones(tmp_path):
    (tmp_path / "params.yaml").write_text(PARAMS)
    run = fa.RunParameters(overrides={"train_gan.stepz": 5}, project=str(tmp_path))
    with pytest.raises(ConfigError, match=r"^overrides: unknown key 'train_gan.stepz' \(did you mean 'train_gan.steps'\?\)"):
        run.config()
    with pytest.raises(ConfigError, match=r"overrides: train_gan.steps = 0: .*greater than or equal to 1"):
        fa.RunParameters(overrides={"train_gan.steps": 0}, project=str(tmp_path)).config()
    with pytest.raises(ConfigError, match=r"'loss'.*'hinj'|hinj"):
        fa.RunParameters(overrides={"train_gan.loss": "hinj"}, project=str(tmp_path)).config()


def test_good_overrides_apply_on_top_of_params_yaml(tmp_path):
    (tmp_path / "params.yaml").write_text(PARAMS)
    cfg = fa.RunParameters(overrides={"plan.sampling_strategy": "minority"}, project=str(tmp_path)).config()
    assert cfg.plan.sampling_strategy == "minority"
    assert cfg.data.long_tail.ratio == 10  # from the file
    with pytest.raises(Exception, match="lock_timeout"):
        fa.RunParameters(lock_timeout=-1)


def test_write_params_keeps_comments_and_nulls(tmp_path):
    (tmp_path / "params.yaml").write_text(PARAMS)
    workspace.write_params(tmp_path, {"plan.sampling_strategy": {"3": 40}, "train_gan.steps": 50})
    text = (tmp_path / "params.yaml").read_text()
    assert "# where prepare writes" in text and "# keep the source's size" in text
    assert "image_size: null" in text
    tree = yaml.safe_load(text)
    assert tree["plan"]["sampling_strategy"] == {"3": 40}
    assert tree["train_gan"] == {"steps": 50}
    assert tree["data"]["long_tail"] == {"ratio": 10}
    before = (tmp_path / "params.yaml").read_bytes()
    workspace.write_params(tmp_path, {})
    assert (tmp_path / "params.yaml").read_bytes() == before


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def dvc_project(root: Path) -> Path:
    """A git + DVC project with one stage `plan` (deps: counts.json, plan.py; params: plan)."""
    root.mkdir(exist_ok=True)
    _git(root, "init", "-q")
    subprocess.run([versioning.dvc_executable(), "init", "-q"], cwd=root, check=True, capture_output=True)
    (root / "params.yaml").write_text(PARAMS + "train_gan:\n  steps: 5\n")
    (root / "plan.py").write_text("code v1")
    (root / "counts.json").write_text("{}")
    (root / "dvc.yaml").write_text("stages:\n  plan:\n    cmd: augment plan\n    deps: [counts.json, plan.py]\n"
                                   "    params: [plan]\n    outs: [out]\n")
    return root


def test_output_hashes_are_dvc_s_and_follow_content_not_listing_order(tmp_path):
    root = dvc_project(tmp_path / "p")
    assert lineage.output_hashes(root, "plan") == {"out": None}
    d = root / "out"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("a")
    (d / "sub" / "b.txt").write_text("b")
    (h,) = lineage.output_hashes(root, "plan").values()
    assert h.endswith(".dir") and lineage.output_hashes(root, "plan") == {"out": h}
    (d / "sub" / "b.txt").write_text("B")
    assert lineage.output_hashes(root, "plan") != {"out": h}
    (d / "sub" / "b.txt").write_text("b")
    assert lineage.output_hashes(root, "plan") == {"out": h}
    (d / "sub" / "b.txt").rename(d / "b.txt")  # same bytes, another path
    assert lineage.output_hashes(root, "plan") != {"out": h}
    # after `dvc commit`, dvc.lock holds the same hash: one owner of the lineage
    subprocess.run([versioning.dvc_executable(), "commit", "--force", "-q"], cwd=root, check=True, capture_output=True)
    assert yaml.safe_load((root / "dvc.lock").read_text())["stages"]["plan"]["outs"][0]["md5"] == \
        lineage.output_hashes(root, "plan")["out"]


def test_stage_inputs_key_on_the_stage_params_and_deps_only(tmp_path):
    root = dvc_project(tmp_path / "p")
    key = lineage.stage_inputs(root, "plan")
    assert key["stage"] == "plan" and key["cmd"] == "augment plan" and key["outs"] == ["out"]
    assert key["params"] == {"params.yaml": {"plan": {"sampling_strategy": "auto"}}}
    workspace.write_params(root, {"train_gan.steps": 7})  # another stage's param
    assert lineage.stage_inputs(root, "plan") == key
    workspace.write_params(root, {"plan.sampling_strategy": "minority"})
    assert lineage.stage_inputs(root, "plan") != key
    workspace.write_params(root, {"plan.sampling_strategy": "auto"})
    assert lineage.stage_inputs(root, "plan") == key
    (root / "plan.py").write_text("code v2")
    changed = lineage.stage_inputs(root, "plan")
    assert changed != key and [d["path"] for d in changed["deps"]] == ["counts.json", "plan.py"]
    # the key is the dvc.lock entry DVC itself writes, less the outputs
    (root / "out").write_text("plan")
    subprocess.run([versioning.dvc_executable(), "commit", "--force", "-q"], cwd=root, check=True, capture_output=True)
    locked = yaml.safe_load((root / "dvc.lock").read_text())["stages"]["plan"]
    assert {k: v for k, v in changed.items() if k in ("cmd", "deps", "params")} == \
        {k: v for k, v in locked.items() if k != "outs"}


OWNER = f"flow run test-run, pid {os.getpid()}"


def test_lock_makes_a_second_run_wait_then_fail_with_the_owner(tmp_path):
    (tmp_path / ".dvc").mkdir()
    with project_lock(tmp_path, 0, OWNER, fa.LOCK_REMEDY):
        assert "pid" in (tmp_path / PROJECT_OWNER).read_text()
        start = time.monotonic()
        with pytest.raises(RepositoryBusy, match=r"another augment run \(flow run .*pid \d+\) holds .*\(waited 1 s\); let it finish, or raise lock_timeout"):
            with project_lock(tmp_path, 1.0, OWNER, fa.LOCK_REMEDY):
                pass
        assert time.monotonic() - start >= 1.0


def test_lock_waiter_gets_it_when_the_holder_ends(tmp_path):
    (tmp_path / ".dvc").mkdir()
    order = []
    held = threading.Event()

    def holder():
        with project_lock(tmp_path, 0, OWNER, fa.LOCK_REMEDY):
            held.set()
            time.sleep(0.5)
            order.append("first done")

    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)
    with project_lock(tmp_path, 10, OWNER, fa.LOCK_REMEDY):
        order.append("second in")
    t.join()
    assert order == ["first done", "second in"]


def test_check_project_refuses_what_cannot_be_versioned(tmp_path):
    with pytest.raises(ConfigError, match="not a DVC project"):
        versioning.check_project(tmp_path, push=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / ".dvc").mkdir()
    with pytest.raises(ConfigError, match="not the top folder of a git repository"):
        versioning.check_project(tmp_path, push=False)
    _git(tmp_path, "init", "-q")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "EMAIL"))}
    home = tmp_path / "home"
    home.mkdir()
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env, HOME=str(home), GIT_CONFIG_NOSYSTEM="1")
    try:
        with pytest.raises(ConfigError, match=r"git does not know who commits"):
            versioning.check_project(tmp_path, push=False)
        _git(tmp_path, "config", "user.name", "t")
        _git(tmp_path, "config", "user.email", "t@example.com")
        versioning.check_project(tmp_path, push=False)
        (tmp_path / ".dvc" / "config").write_text("")
        with pytest.raises(ConfigError, match="no default remote"):
            versioning.check_project(tmp_path, push=True)
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_version_tag_names_date_and_run():
    import datetime as dt

    when = dt.datetime(2025, 3, 4, tzinfo=dt.timezone.utc)
    assert versioning.version_tag("0a1b2c3d-4e5f-6789-abcd-ef0123456789", when) == "augment-2025-03-04-0a1b2c"


def _metrics() -> dict:
    """A metrics.json dict as `pipeline.evaluate` makes it: `gan` right on every image, `none` on 4 of 6."""
    import pandas as pd

    from pipeline.recommend import metrics_from_predictions

    y = [0, 0, 1, 1, 2, 2]
    rows = []
    for seed in (0, 1):
        for subset in ("test", "val"):
            rows += [("gan", seed, subset, t, t) for t in y]
            rows += [("none", seed, subset, t, p) for t, p in zip(y, [0, 0, 1, 1, 0, 1])]
    pred = pd.DataFrame(rows, columns=["strategy", "seed", "subset", "y_true", "y_pred"])
    return dict(metrics_from_predictions(pred, ["a", "b", "c"]), gan_quality={"fid": 12.5, "intra_fid": {"a": 3.0}})


VERSION = {"tag": "augment-2025-03-04-0a1b2c", "commit": "f" * 40, "remote": "local",
           "fetch": "dvc get /repo data/synthetic --rev augment-2025-03-04-0a1b2c"}


def test_report_artifact_has_the_report_verdict_table_and_fetch_command():
    from pipeline.report_sections import verdict

    metrics = _metrics()
    md = artifacts.report_markdown({"a": 0, "b": 30}, metrics, VERSION)
    assert verdict(metrics).startswith("Gain:") and verdict(metrics) in md
    assert md.index(verdict(metrics)) < md.index("| gan ")  # verdict first, then the strategy table
    assert "| b | 30 |" in md
    assert VERSION["fetch"] in md and "`augment-2025-03-04-0a1b2c`" in md
    assert "no verdict" in artifacts.report_markdown({"b": 30}, None, VERSION)
    assert "| gan |" not in artifacts.report_markdown({"b": 30}, None, VERSION)


def test_key_figures_table():
    rows = {r["figure"]: r["value"] for r in artifacts.key_figures({"a": 0, "b": 30, "c": 5}, _metrics(), VERSION)}
    assert rows["images added"] == 35 and rows["classes topped up"] == 2
    assert rows["balanced accuracy gain over none"].startswith("0.333")
    assert rows["GAN fid"] == 12.5 and "GAN intra_fid" not in rows
    assert rows["version"] == VERSION["tag"]


def test_a_killed_run_is_undone_by_the_next_one(tmp_path):
    (tmp_path / ".dvc").mkdir()
    _git(tmp_path, "init", "-q")
    (tmp_path / "params.yaml").write_text(PARAMS)
    killed = f"""
import os, sys
from pathlib import Path
sys.path.insert(0, {str(REPO)!r})
from pipeline import workspace
root = Path({str(tmp_path)!r})
with workspace.rollback_on_failure(root):
    workspace.write_params(root, {{"plan.sampling_strategy": "minority"}})
    (root / "dvc.lock").write_text("half written")
    os._exit(9)  # killed: no cleanup runs
"""
    assert subprocess.run([sys.executable, "-c", killed]).returncode == 9
    assert (tmp_path / workspace.PENDING).is_file() and "minority" in (tmp_path / "params.yaml").read_text()
    assert workspace.restore_interrupted(tmp_path)
    assert (tmp_path / "params.yaml").read_text() == PARAMS and not (tmp_path / "dvc.lock").exists()
    assert not workspace.restore_interrupted(tmp_path)  # once


def test_rollback_puts_params_back_on_failure_and_keeps_them_on_success(tmp_path):
    (tmp_path / ".dvc").mkdir()
    _git(tmp_path, "init", "-q")
    (tmp_path / "params.yaml").write_text(PARAMS)
    with pytest.raises(RuntimeError):
        with workspace.rollback_on_failure(tmp_path):
            workspace.write_params(tmp_path, {"plan.sampling_strategy": "minority"})
            raise RuntimeError("a stage failed")
    assert (tmp_path / "params.yaml").read_text() == PARAMS
    with workspace.rollback_on_failure(tmp_path):
        workspace.write_params(tmp_path, {"plan.sampling_strategy": "minority"})
    assert "minority" in (tmp_path / "params.yaml").read_text() and not (tmp_path / workspace.PENDING).exists()


def test_serve_without_a_server_says_so_in_one_line(tmp_path):
    """`make serve` before `make server`: one line naming `make server`, exit 2, no httpx traceback."""
    import socket

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PREFECT_HOME=str(tmp_path), PREFECT_API_URL=f"http://127.0.0.1:{port}/api")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(REPO / "flows" / "serve.py"), "--wait", "2"], env=env,
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: no Prefect API answers at http://127.0.0.1:"), lines
    assert "run `make server` in another terminal first" in lines[0] and "Traceback" not in proc.stderr
    assert time.monotonic() - started < 60  # waited about --wait, not Prefect's own retries
