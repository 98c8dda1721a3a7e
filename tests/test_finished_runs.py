"""Finished evaluation runs on disk: what names a run, the round trip, and a stopped evaluate resuming."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import evaluate as E
from pipeline import finished_runs as F
from pipeline import params_file
from tests.conftest import long_tailed_digits

FP = {"train": "t" * 64, "val": "v" * 64, "test": "s" * 64}


def _settings(**kw) -> dict:
    return params_file.build({}, {f"evaluate.{k}": v for k, v in kw.items()}).evaluate.model_dump(mode="json")


def _key(settings=None, fp=FP, plan=(0, 2), device="cpu", precision="fp32") -> str:
    return F.run_key(settings or _settings(), fp, list(plan), device, precision)


def test_the_key_follows_what_changes_a_run_and_only_that():
    base = _key()
    assert _key() == base  # stable
    # settings that do not change any one run's predictions
    assert _key(_settings(strategies=["none"], seeds=7, workers=2, gan_quality=False,
                          select_by="nll", reuse_runs=False)) == base
    # settings, data, plan, device, precision, threads that do
    assert _key(_settings(epochs=3)) != base
    assert _key(_settings(cpu_threads=2)) != base
    assert _key(fp={**FP, "train": "x" * 64}) != base
    assert _key(fp={**FP, "synthetic": "y" * 64}) != base
    assert _key(plan=(0, 3)) != base
    assert _key(device="cuda") != base and _key(precision="bf16") != base


def test_the_code_digest_covers_every_source_file(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    first = F.code_digest.__wrapped__(pkg)
    (pkg / "sub" / "b.py").write_text("y = 3\n")
    assert F.code_digest.__wrapped__(pkg) != first
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    assert F.code_digest.__wrapped__(pkg) == first
    (pkg / "notes.txt").write_text("not code")
    assert F.code_digest.__wrapped__(pkg) == first


def _frame(name="none", seed=0, n=5) -> pd.DataFrame:
    return E._prediction_rows(name, seed, "test", np.arange(n), np.arange(n) % 3, np.zeros(n, dtype=np.int64),
                              np.linspace(0, 1, n))


def test_save_then_load_gives_the_same_frame_and_seconds(tmp_path):
    runs = F.FinishedRuns(tmp_path / "runs", _key())
    assert runs.load("logit_adjust+augment", 1) is None
    frame = _frame("logit_adjust+augment", 1)
    path = runs.save("logit_adjust+augment", 1, None, frame, 12.5)
    assert path.name.startswith("logit_adjust+augment-seed1-") and path.suffix == ".parquet"
    loaded, seconds = runs.load("logit_adjust+augment", 1)
    pd.testing.assert_frame_equal(loaded, frame)
    assert seconds == 12.5
    # another seed, strategy, key or mixing policy is another run
    assert runs.load("logit_adjust+augment", 2) is None and runs.load("none", 1) is None
    assert F.FinishedRuns(tmp_path / "runs", _key(plan=(1, 1))).load("logit_adjust+augment", 1) is None


def test_runs_on_real_images_only_keep_their_names_when_the_synthetic_data_change(tmp_path):
    with_syn = {**FP, "synthetic": "y" * 64}

    def runs(fp):
        return F.FinishedRuns(tmp_path, _key(fp=fp), _key(fp=F.real_fingerprints(fp)), {"logit_adjust"})
    a, b = runs(with_syn), runs({**with_syn, "synthetic": "z" * 64})
    assert F.real_fingerprints(with_syn) == FP
    assert a.path("logit_adjust", 0) == b.path("logit_adjust", 0)  # named without the synthetic data
    assert a.path("gan_la", 0) != b.path("gan_la", 0)  # uses them: another run
    assert a.judge_path() == b.judge_path()  # the judge trains on real images
    assert runs(FP).path("logit_adjust", 0) == a.path("logit_adjust", 0)  # with no synthetic data at all
    # without real_key every run has the one key
    plain = F.FinishedRuns(tmp_path, _key(fp=with_syn))
    assert plain.path("logit_adjust", 0) == plain.path("logit_adjust", 0, None) != a.path("logit_adjust", 0)


def test_an_unreadable_file_trains_again(tmp_path, caplog):
    runs = F.FinishedRuns(tmp_path, _key())
    runs.path("none", 0).write_bytes(b"not parquet")
    assert runs.load("none", 0) is None
    assert "unreadable" in caplog.text


def test_the_mix_names_its_policy_and_rows():
    class Mix:  # the two attributes the digest reads
        def __init__(self, policy, rows):
            self.policy, self.rows = policy, np.asarray(rows)
    runs = F.FinishedRuns("r", _key())
    a = runs.path("gan_policy", 0, Mix("cap=4", [1, 2, 3]))
    assert a == runs.path("gan_policy", 0, Mix("cap=4", [1, 2, 3]))
    assert a != runs.path("gan_policy", 0, Mix("cap=4", [1, 2]))
    assert a != runs.path("gan_policy", 0, Mix("cap=all", [1, 2, 3]))
    assert a != runs.path("gan_policy", 0, None)


def test_prune_keeps_the_named_runs_only(tmp_path):
    runs = F.FinishedRuns(tmp_path, _key())
    keep = runs.save("none", 0, None, _frame(), 1.0)
    other = F.FinishedRuns(tmp_path, _key(plan=(5, 5))).save("none", 0, None, _frame(), 1.0)
    (tmp_path / ".tmp-half").write_bytes(b"x")
    (tmp_path / "README").write_text("a user's file")
    assert runs.prune({keep}) == 2
    assert keep.is_file() and not other.exists() and (tmp_path / "README").is_file()


@pytest.fixture(scope="module")
def digits():
    train, val, test = long_tailed_digits([40, 30, 25, 20, 15, 12, 10, 7, 5, 4])
    plan = {name: int(40 - n) for name, n in train.counts_by_name().items()}
    return E.EvalData(train, val, test), plan


def _cfg(**kw):
    base = dict(epochs=1, batch_size=32, device="cpu", workers=1, gan_quality=False)
    return params_file.build({}, {f"evaluate.{k}": v for k, v in {**base, **kw}.items()}).evaluate


def test_a_stopped_evaluation_resumes_and_matches_an_unstopped_one(digits, tmp_path, monkeypatch):
    data, plan = digits
    cfg = _cfg(seeds=2, strategies=["none", "oversample"])
    clean = E.evaluate(cfg, data, plan, progress=False)
    assert clean["metrics"]["reused_runs"] == 0

    real, trained = E.run_strategy, []

    def stops_at_the_third(name, *a, **k):
        if len(trained) == 2:
            raise KeyboardInterrupt  # the run is stopped while its third classifier trains
        trained.append((name, a[3]))
        return real(name, *a, **k)

    monkeypatch.setattr(E, "run_strategy", stops_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        E.evaluate(cfg, data, plan, progress=False, runs_dir=tmp_path / "runs")
    assert trained == [("none", 0), ("none", 1)]
    assert len(list((tmp_path / "runs").glob("*.parquet"))) == 2

    trained.clear()
    monkeypatch.setattr(E, "run_strategy", lambda name, *a, **k: trained.append((name, a[3])) or real(name, *a, **k))
    resumed = E.evaluate(cfg, data, plan, progress=False, runs_dir=tmp_path / "runs")
    assert trained == [("oversample", 0), ("oversample", 1)]  # only what had not finished
    assert resumed["metrics"]["reused_runs"] == 2
    pd.testing.assert_frame_equal(resumed["predictions"], clean["predictions"])
    drop = ("timing_s", "reused_runs")
    assert {k: v for k, v in resumed["metrics"].items() if k not in drop} == \
        {k: v for k, v in clean["metrics"].items() if k not in drop}

    # a seed added trains one run per strategy; other settings train everything afresh and prune
    trained.clear()
    E.evaluate(cfg.model_copy(update={"seeds": 3}), data, plan, progress=False, runs_dir=tmp_path / "runs")
    assert trained == [("none", 2), ("oversample", 2)]
    trained.clear()
    E.evaluate(cfg.model_copy(update={"seeds": 1, "lr": 0.01}), data, plan, progress=False,
               runs_dir=tmp_path / "runs")
    assert trained == [("none", 0), ("oversample", 0)]
    assert len(list((tmp_path / "runs").glob("*.parquet"))) == 2


def test_the_evaluation_judge_is_kept_for_a_resumed_run(digits, tmp_path, monkeypatch):
    data, _ = digits
    tables = {"train": data.train, "val": data.val, "test": data.test, "synthetic": data.train}
    cfg = _cfg(seeds=1, gan_quality=True)
    runs = F.FinishedRuns(tmp_path / "runs", _key())
    real, fits = E.fit_judge, []
    monkeypatch.setattr(E, "fit_judge", lambda *a, **k: fits.append(a[0]) or real(*a, **k))
    first = E._judge(cfg, tables, ["none"], None, False, runs)
    again = E._judge(cfg, tables, ["none"], None, False, runs)
    assert fits == ["evaluate"] and runs.judge_path().is_file()  # trained once, then read back
    x = torch.from_numpy(data.test.images[:16]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        assert torch.equal(first(x), again(x))
    # another evaluation's inputs: another judge; pruning keeps only the current one
    other = F.FinishedRuns(tmp_path / "runs", _key(plan=(9, 9)))
    E._judge(cfg, tables, ["none"], None, False, other)
    assert fits == ["evaluate", "evaluate"]
    other.prune(set())
    assert [p.name for p in (tmp_path / "runs").glob("judge-*.pt")] == [other.judge_path().name]


def test_a_new_gan_trains_only_the_runs_that_use_its_images(digits, tmp_path, monkeypatch):
    data, plan = digits
    cfg = _cfg(seeds=1, strategies=["none", "gan"])
    add = E.plan_counts(plan, data.train.class_names)
    first = data.train.subset(np.flatnonzero((add > 0)[data.train.labels]))
    second = first.subset(np.arange(len(first))[::-1])  # the same images in another order: other data
    real, trained = E.run_strategy, []
    monkeypatch.setattr(E, "run_strategy", lambda name, *a, **k: trained.append(name) or real(name, *a, **k))
    one = E.evaluate(cfg, E.EvalData(data.train, data.val, data.test, first), plan, progress=False,
                     runs_dir=tmp_path / "runs")
    assert trained == ["none", "gan"]
    trained.clear()
    two = E.evaluate(cfg, E.EvalData(data.train, data.val, data.test, second), plan, progress=False,
                     runs_dir=tmp_path / "runs")
    assert trained == ["gan"] and two["metrics"]["reused_runs"] == 1
    same = lambda r: r["predictions"].query("strategy == 'none'").reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(same(one), same(two))
    assert len(list((tmp_path / "runs").glob("*.parquet"))) == 2  # the first GAN's run was pruned
