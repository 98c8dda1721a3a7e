"""pipeline.lock: one lock per folder holding an output, so runs from two working folders that share
absolute `paths.*` wait for each other; taken in sorted order, one overall timeout."""

from __future__ import annotations

import contextlib
import time

import pytest

from conftest import run_cli
from pipeline import params_file
from pipeline.lock import LOCK_NAME, LockBusy, hold, hold_outputs, lock_files, output_locks


def shared_paths(shared) -> dict:
    return {"paths": {"prepared": str(shared / "prepared"), "plan": str(shared / "plan.json"),
                      "gan": str(shared / "models" / "gan"), "synthetic": str(shared / "synthetic"),
                      "reports": str(shared / "reports")}}


def test_lock_files_are_the_output_folders_sorted(tmp_path):
    with contextlib.chdir(tmp_path):
        files = output_locks(params_file.build({}))
    assert files == [tmp_path.resolve() / "data" / LOCK_NAME, tmp_path.resolve() / "data" / "models" / LOCK_NAME]
    assert lock_files(["b/x", "a/y", "b/z"]) == sorted(lock_files(["a/y", "b/x"]))


def test_two_working_folders_with_the_same_absolute_paths_share_the_locks(tmp_path):
    shared, a, b = tmp_path / "shared", tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    with contextlib.chdir(a):
        in_a, default_a = output_locks(params_file.build(shared_paths(shared))), output_locks(params_file.build({}))
    with contextlib.chdir(b):
        in_b, default_b = output_locks(params_file.build(shared_paths(shared))), output_locks(params_file.build({}))
    assert in_a == in_b == [shared.resolve() / LOCK_NAME, shared.resolve() / "models" / LOCK_NAME]
    assert not set(default_a) & set(default_b)  # relative paths: each folder its own outputs


def test_a_run_in_another_folder_on_the_same_paths_waits_then_fails(tmp_path):
    """`augment prepare` in folder b while folder a's run holds the shared outputs: one line, exit 1,
    nothing written to the shared folder."""
    shared, a, b = tmp_path / "shared", tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    params = "\n".join(f"  {k}: {v}" for k, v in shared_paths(shared)["paths"].items())
    (b / "params.yaml").write_text(f"paths:\n{params}\n")
    with contextlib.chdir(a), hold_outputs(params_file.build(shared_paths(shared)), 0, "wait"):
        proc = run_cli("prepare", "-q", "--lock-timeout", "1", cwd=b)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert f"holds {shared.resolve() / LOCK_NAME}; waiting up to 1 s" in proc.stderr  # the warning while it waits
    assert proc.returncode == 1 and lines == [
        f"error: another augment run holds {shared.resolve() / LOCK_NAME} (waited 1 s); let it finish, "
        "or pass --lock-timeout SECONDS to wait longer"], proc.stderr
    assert {p.name for p in shared.rglob("*") if p.is_file()} == {LOCK_NAME}  # a's locks only
    # once a's run ends, b's runs
    assert run_cli("prepare", "-q", cwd=b).returncode == 0 and (shared / "prepared" / "train.parquet").is_file()


def test_the_timeout_is_for_all_the_locks_together(tmp_path):
    files = [tmp_path / "x" / LOCK_NAME, tmp_path / "y" / LOCK_NAME]
    with hold(files[1:], 0, "wait"):
        start = time.monotonic()
        with pytest.raises(LockBusy, match=r"holds .*y/\.augment\.lock \(waited 1 s\); let it finish, or wait"):
            with hold(files, 1.0, "wait"):
                pass
        assert 1.0 <= time.monotonic() - start < 5
    with hold(files, 0, "wait"):  # all released: the first hold freed x when y was refused
        pass


def test_runs_whose_outputs_nest_share_a_lock_whichever_starts_first(tmp_path):
    """Run `outer` writes shared/models/gan; run `inner` (another working folder) writes a folder
    inside it: they must exclude each other, though their outputs' parent folders differ."""
    shared = tmp_path / "shared"
    outer = params_file.build({"paths": dict(shared_paths(tmp_path / "a")["paths"], gan=str(shared / "models" / "gan"))})
    inner = params_file.build({"paths": dict(shared_paths(tmp_path / "b")["paths"],
                                        synthetic=str(shared / "models" / "gan" / "extra" / "synthetic"))})
    for first, second in ((outer, inner), (inner, outer)):
        with hold_outputs(first, 0, "wait"):
            with pytest.raises(LockBusy, match=r"holds .*shared/models/.*\.augment\.lock \(waited 0 s\)"):
                with hold_outputs(second, 0.2, "wait"):
                    pass
        with hold_outputs(second, 0, "wait"):  # once the first ends, the second runs
            pass
    # both take the locks of both trees now, in one sorted order: no deadlock
    assert set(output_locks(outer)) & set(output_locks(inner)) == {
        shared.resolve() / "models" / LOCK_NAME, shared.resolve() / "models" / "gan" / "extra" / LOCK_NAME}


def test_a_nested_run_that_locks_meanwhile_is_waited_for(tmp_path, monkeypatch):
    """The lock set is read again once held: a nested run's lock made in between is taken too."""
    from pipeline import lock

    shared = tmp_path / "shared"
    outer = params_file.build({"paths": dict(shared_paths(tmp_path / "a")["paths"], gan=str(shared / "gan"))})
    nested = shared / "gan" / "inner" / LOCK_NAME
    calls, real = [], lock.output_locks
    with contextlib.ExitStack() as other_run:
        def racing(cfg):  # the nested run takes its lock just after this run listed its set
            files = real(cfg)
            calls.append(files)
            if len(calls) == 1:
                other_run.enter_context(hold([nested], 0, "wait"))
            return files

        monkeypatch.setattr(lock, "output_locks", racing)
        with pytest.raises(LockBusy, match=r"gan/inner/\.augment\.lock"):
            with hold_outputs(outer, 0.2, "wait"):
                pass
    assert nested not in calls[0] and nested in calls[1]
