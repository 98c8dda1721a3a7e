"""Strategies, the training loop, the gain, and the whole evaluation on long-tailed sklearn digits."""

from __future__ import annotations

import copy
import json
import math
import typing

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import classifier_recipe as R
from pipeline import config, params_file
from pipeline import evaluate as E
from pipeline import metrics as M
from pipeline import recommend as Rec
from pipeline import results
from pipeline import strategies as S
from pipeline import training as T
from pipeline.data import ImageTable, random_oversample
from pipeline.errors import ConfigError, DataError
from tests.conftest import long_tailed_digits, tiny_arrays

NAMES = ("a", "b", "c")


def _table(counts=(6, 4, 3), seed=0) -> ImageTable:
    x, y = tiny_arrays(counts, seed=seed)
    return ImageTable(x, y, NAMES)


def _cfg(**kw) -> config.EvaluateConfig:
    return params_file.build({}, {f"evaluate.{k}": v for k, v in kw.items()}).evaluate


# ---- strategies -------------------------------------------------------------------------------

def test_inverse_frequency_weights_by_hand():
    assert R.inverse_frequency_weights(np.array([6, 3, 1])) == pytest.approx([10 / 18, 10 / 9, 10 / 3])
    assert R.inverse_frequency_weights(np.array([2, 0]))[1] == 0.0


def test_plan_counts_and_bad_plan():
    assert E.plan_counts({"b": 2, "c": 3}, NAMES).tolist() == [0, 2, 3]
    with pytest.raises(DataError, match="'z' is not in the data"):
        E.plan_counts({"z": 1}, NAMES)
    with pytest.raises(DataError, match="negative"):
        E.plan_counts({"a": -1}, NAMES)


def test_random_oversample_adds_copies_of_the_right_class():
    t = _table()
    out = random_oversample(t, np.array([0, 2, 5]), seed=0)
    assert out.counts().tolist() == [6, 6, 8]
    new = out.subset(np.arange(len(t), len(out)))
    for img, label in zip(new.images, new.labels):
        assert any(np.array_equal(img, o) for o in t.images[t.labels == label])


def test_smote_reaches_the_plan_with_classes_of_two_and_one_image():
    t = _table((8, 2, 1))
    add = np.array([0, 6, 4])
    out = S.smote_oversample(t, add, seed=0)
    assert out.counts().tolist() == [8, 8, 5]
    assert out.images.dtype == np.uint8 and out.image_shape == t.image_shape
    new = out.subset(np.arange(len(t), len(out)))
    # class b (2 images, k=1): every new image lies between its two images, pixel by pixel
    two = t.images[t.labels == 1].astype(int)
    b = new.images[new.labels == 1].astype(int)
    assert len(b) == 6
    assert (b >= two.min(0) - 1).all() and (b <= two.max(0) + 1).all()
    # class c (1 image): duplicated
    single = t.images[t.labels == 2][0]
    assert all(np.array_equal(img, single) for img in new.images[new.labels == 2])
    again = S.smote_oversample(t, add, seed=0)
    assert np.array_equal(again.images, out.images)


def test_strategy_registry_matches_the_config_choices():
    assert set(S.STRATEGIES) == {
        "none", "class_weight", "oversample", "smote", "augment", "logit_adjust", "drw", "decouple", "mixup_drw",
        "logit_adjust+augment", "gan", "gan+augment", "gan_la", "gan_la_real_prior", "gan_la_real_prior+augment", "gan_la+augment", "gan_mixup_drw", "gan_mixup_drw_real_prior", "gan_drw", "gan_crt", "gan_policy",
        "synthetic_only"}
    assert {n for n, s in S.STRATEGIES.items() if s.uses_synthetic} == {
        "gan", "gan+augment", "gan_la", "gan_la_real_prior", "gan_la_real_prior+augment", "gan_la+augment", "gan_mixup_drw", "gan_mixup_drw_real_prior", "gan_drw", "gan_crt", "gan_policy", "synthetic_only"}
    assert params_file.build({}).evaluate.strategies == list(S.STRATEGIES)  # params.yaml's default runs them all
    with pytest.raises(ConfigError, match="valid|one of"):
        params_file.build({}, {"evaluate.strategies": ["mixup"]})


def test_strategies_prepare_their_data():
    t, syn = _table(), _table((0, 2, 3), seed=9)
    add = np.array([0, 2, 3])
    cfg = _cfg(tau=0.5, late_fraction=0.5, mixup_alpha=0.3)
    assert len(S.STRATEGIES["gan"].prepare(S.StrategyInputs(t, syn, add, 0, cfg)).table) == len(t) + len(syn)
    assert S.STRATEGIES["gan+augment"].prepare(S.StrategyInputs(t, syn, add, 0, cfg)).augment
    assert S.STRATEGIES["synthetic_only"].prepare(S.StrategyInputs(t, syn, add, 0, cfg)).table is syn
    assert S.STRATEGIES["class_weight"].prepare(S.StrategyInputs(t, None, add, 0, cfg)).class_weight is not None
    with pytest.raises(DataError, match="augment generate"):
        S.STRATEGIES["synthetic_only"].prepare(S.StrategyInputs(t, None, add, 0, cfg))
    la = S.STRATEGIES["logit_adjust"].prepare(S.StrategyInputs(t, None, add, 0, cfg=cfg))
    assert la.table is t and la.recipe.loss == "logit_adjusted" and la.recipe.tau == 0.5
    assert S.STRATEGIES["drw"].prepare(S.StrategyInputs(t, None, add, 0, cfg=cfg)).recipe.class_weight == "deferred"
    assert S.STRATEGIES["decouple"].prepare(S.StrategyInputs(t, None, add, 0, cfg=cfg)).recipe.retrain_head
    assert S.STRATEGIES["mixup_drw"].prepare(S.StrategyInputs(t, None, add, 0, cfg=cfg)).recipe.mixup_alpha == 0.3
    la_aug = S.STRATEGIES["logit_adjust+augment"].prepare(S.StrategyInputs(t, None, add, 0, cfg=cfg)).recipe
    assert la_aug.loss == "logit_adjusted" and la_aug.augment and la_aug.tau == 0.5
    for name, phase in (("gan_la", "all"), ("gan_la+augment", "all"), ("gan_la_real_prior+augment", "all"), ("gan_mixup_drw", "all"), ("gan_drw", "late"),
                        ("gan_crt", "head")):
        ts = S.STRATEGIES[name].prepare(S.StrategyInputs(t, syn, add, 0, cfg=cfg))
        assert ts.table is t and ts.synthetic.pool is syn and ts.synthetic.phase == phase
        assert ts.recipe.augment == name.endswith("+augment")
        assert ts.synthetic.per_epoch is None  # the pool is the plan: all of it every epoch
        with pytest.raises(DataError, match="augment generate"):
            S.STRATEGIES[name].prepare(S.StrategyInputs(t, None, add, 0, cfg=cfg))
    real_aug = S.STRATEGIES["gan_la_real_prior+augment"].prepare(S.StrategyInputs(t, syn, add, 0, cfg=cfg)).recipe
    assert real_aug.prior == "real" and real_aug.augment and real_aug.loss == "logit_adjusted"
    mix = S.STRATEGIES["gan_mixup_drw"].prepare(S.StrategyInputs(t, syn, add, 0, cfg=cfg)).recipe
    assert mix.mixup_alpha == 0.3 and mix.class_weight == "deferred" and mix.loss == "ce" and mix.prior == "batches"
    real_mix = S.STRATEGIES["gan_mixup_drw_real_prior"].prepare(S.StrategyInputs(t, syn, add, 0, cfg=cfg))
    assert real_mix.recipe == R.Recipe(class_weight="deferred", mixup_alpha=0.3, prior="real", tau=0.5, late_fraction=0.5)
    assert real_mix.synthetic.phase == "all" and real_mix.synthetic.pool is syn
    # a pool twice the plan: the plan's count per class drawn afresh each epoch
    pool = ImageTable.concat([syn, syn])
    assert S.synthetic_pool(pool, add, "all", t.counts(), _cfg(synthetic_share=None)).per_epoch.tolist() == [0, 2, 3]


def test_synthetic_per_epoch_water_fills_the_share_by_hand():
    n = np.array([100, 10, 2])
    # budget floor(0.25 / 0.75 * 112) = 37: level 24 fills 14 + 22 = 36, the last row goes to the
    # rarer of the two classes tied at 24 (class 2)
    assert R.synthetic_per_epoch(n, np.array([0, 90, 98]), 0.25).tolist() == [0, 14, 23]
    # a class's cap holds it back and the budget rises the others: class 2 stops at 5, level 37 - 5
    assert R.synthetic_per_epoch(n, np.array([0, 90, 5]), 0.25).tolist() == [0, 32, 5]
    # a class above the level gets none even when the plan gives it some
    assert R.synthetic_per_epoch(n, np.array([50, 90, 98]), 0.25).tolist() == [0, 14, 23]
    # what fits the budget is returned as it is; None = no share
    assert R.synthetic_per_epoch(n, np.array([0, 3, 4]), 0.25).tolist() == [0, 3, 4]
    assert R.synthetic_per_epoch(n, np.array([0, 90, 98]), None).tolist() == [0, 90, 98]
    # the share of the epoch's rows is never above the setting
    for share in (0.1, 0.35, 0.5, 0.9):
        out = R.synthetic_per_epoch(n, np.array([0, 900, 980]), share)
        assert out.sum() / (out.sum() + n.sum()) <= share and out.sum() == int(share / (1 - share) * 112)
    with pytest.raises(ValueError, match="share"):
        R.synthetic_per_epoch(n, n, 1.0)


def test_pool_strategies_keep_the_synthetic_share():
    t, syn = _table((40, 10, 2)), _table((0, 60, 60), seed=9)
    add = np.array([0, 30, 38])
    ts = S.STRATEGIES["gan_la_real_prior"].prepare(S.StrategyInputs(t, syn, add, 0, _cfg(synthetic_share=0.25)))
    # budget floor(52 / 3) = 17: level 14 fills 4 + 12 = 16, the last row to class 2 (tied, rarer)
    assert ts.synthetic.per_epoch.tolist() == [0, 4, 13]
    assert ts.synthetic.candidates == 1 and _cfg().synthetic_share == 0.35  # params.yaml's defaults
    hard = S.STRATEGIES["gan_mixup_drw"].prepare(S.StrategyInputs(t, syn, add, 0, _cfg(synthetic_candidates=3)))
    assert hard.synthetic.candidates == 3
    # synthetic_ratio caps each class at floor(ratio x its real rows) before the share's water-fill:
    # ratio 1 -> caps (0, 10, 2), 12 rows within the budget of 17, so the caps themselves
    capped = S.STRATEGIES["gan_la_real_prior"].prepare(S.StrategyInputs(t, syn, add, 0, _cfg(synthetic_ratio=1.0)))
    assert capped.synthetic.per_epoch.tolist() == [0, 10, 2] and _cfg().synthetic_ratio is None
    # ratio 0.5 -> floor(5.0), floor(1.0); without a share the caps are the draw
    half = _cfg(synthetic_share=None, synthetic_ratio=0.5)
    assert S.synthetic_pool(syn, add, "all", t.counts(), half).per_epoch.tolist() == [0, 5, 1]
    # ratio 3 -> caps (0, 30, 6): the budget of 17 now water-fills 11 + 6
    three = _cfg(synthetic_share=0.25, synthetic_ratio=3.0)
    assert S.synthetic_pool(syn, add, "all", t.counts(), three).per_epoch.tolist() == [0, 11, 6]
    # spread even: the synthetic counts themselves rise to a common level; budget 17 -> level 5 each
    # (15), the last 2 rows one each to the tied classes, rarest first
    every = _table((20, 60, 60), seed=9)
    even = S.STRATEGIES["gan_mixup_drw"].prepare(
        S.StrategyInputs(t, every, np.array([20, 30, 38]), 0, _cfg(synthetic_share=0.25, synthetic_spread="even")))
    assert even.synthetic.per_epoch.tolist() == [5, 6, 6] and _cfg().synthetic_spread == "rarest_first"
    # a class the plan adds nothing to stays at 0: level 8 fills 16, the last row to the rarest
    spread = _cfg(synthetic_share=0.25, synthetic_spread="even")
    assert S.synthetic_pool(syn, add, "all", t.counts(), spread).per_epoch.tolist() == [0, 8, 9]
    with pytest.raises(ConfigError, match="synthetic_spread"):
        _cfg(synthetic_spread="uniform")
    with pytest.raises(ValueError, match="spread"):
        R.synthetic_per_epoch(t.counts(), add, 0.25, "uniform")
    assert typing.get_args(config.EvaluateConfig.model_fields["synthetic_spread"].annotation) == R.SPREADS
    with pytest.raises(ConfigError, match="synthetic_ratio"):
        _cfg(synthetic_ratio=0.0)
    with pytest.raises(ConfigError, match="synthetic_share"):
        _cfg(synthetic_share=1.0)


def test_even_spread_warns_of_a_plan_that_leaves_classes_out(caplog):
    with caplog.at_level("WARNING", logger="augment"):
        E._warn_uneven_plan(_cfg(synthetic_spread="even"), np.array([0, 3, 5]), ("big", "mid", "rare"))
    assert "'big'" in caplog.text and "it draws no synthetic rows" in caplog.text and "an int above" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="augment"):
        E._warn_uneven_plan(_cfg(synthetic_spread="even"), np.array([1, 3, 5]), ("big", "mid", "rare"))
        E._warn_uneven_plan(_cfg(), np.array([0, 3, 5]), ("big", "mid", "rare"))  # rarest_first: as planned
    assert caplog.text == ""


# ---- training ---------------------------------------------------------------------------------

def test_augment_batch_identity_at_zero_strength_and_seeded():
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    same = T.augment_batch(x, torch.Generator().manual_seed(0), degrees=0, scale=0, shift=0)
    assert torch.allclose(same, x, atol=1e-5)
    a = T.augment_batch(x, torch.Generator().manual_seed(1))
    b = T.augment_batch(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.allclose(a, x)


def test_train_classifier_learns_and_is_deterministic():
    train, val = _table((20, 20, 20)), _table((5, 5, 5), seed=1)
    cfg = _cfg(epochs=4, batch_size=16, device="cpu")
    m1 = T.train_classifier(R.TrainingSet(train), val, cfg, seed=3, progress=False)
    m2 = T.train_classifier(R.TrainingSet(train), val, cfg, seed=3, progress=False)
    assert not m1.training
    for p1, p2 in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(p1, p2)
    pred = T.predict(m1, val.images)
    assert M.balanced_accuracy(M.confusion_matrix(val.labels, pred, 3)) > 0.9
    # trained in channels_last (the faster layout for oneDNN and tensor cores), and predicts the
    # same from it as an NCHW copy of the same weights
    conv = next(m for m in m1.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    nchw = copy.deepcopy(m1).to(memory_format=torch.contiguous_format)
    x = torch.from_numpy(val.images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        assert torch.allclose(nchw(x.contiguous()), m1(x.contiguous(memory_format=torch.channels_last)), atol=1e-4)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_precision_sets_autocast_for_training_steps_only(monkeypatch, precision):
    """evaluate.precision bf16: the training forwards run under bf16 autocast, the weights stay fp32,
    and validation predictions run without autocast; fp32: never autocast."""
    seen = []  # (training?, autocast on?) per forward of the classifier
    real_build = T.build_classifier

    def build(*a, **k):
        model = real_build(*a, **k)
        model.register_forward_pre_hook(lambda m, _: seen.append((m.training, torch.is_autocast_enabled("cpu"))))
        return model

    monkeypatch.setattr(T, "build_classifier", build)
    train, val = _table((20, 20, 20)), _table((5, 5, 5), seed=1)
    cfg = _cfg(epochs=3, batch_size=16, device="cpu", precision=precision)
    model = T.train_classifier(R.TrainingSet(train), val, cfg, seed=0, progress=False)
    in_training = {on for training, on in seen if training}
    assert in_training == ({True} if precision == "bf16" else {False})
    assert {on for training, on in seen if not training} == {False}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert M.balanced_accuracy(M.confusion_matrix(val.labels, T.predict(model, val.images), 3)) > 0.9


def test_train_classifier_with_weights_augmentation_and_no_validation():
    train = _table((12, 6, 3))
    empty = train.subset(np.zeros(0, dtype=np.int64))
    cfg = _cfg(epochs=1, batch_size=8, device="cpu")
    ts = R.TrainingSet(train, class_weight=np.array([1.0, 2.0, 4.0]), sample_weight=np.ones(len(train)), augment=True)
    model = T.train_classifier(ts, empty, cfg, 0, progress=False)
    assert T.predict(model, train.images).shape == (len(train),)


def test_cuda_requested_without_a_gpu_is_a_config_error():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ConfigError, match="evaluate.device"):
        T.resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_classifier_on_cuda():
    train = _table((12, 6, 3))
    model = T.train_classifier(R.TrainingSet(train), train, _cfg(epochs=1, device="cuda"), 0, progress=False)
    assert next(model.parameters()).is_cuda
    assert T.predict(model, train.images).shape == (len(train),)


# ---- the gain and the metrics core --------------------------------------------------------------

def _summary(per_seed: list[float]) -> dict:
    return {"balanced_accuracy": M.mean_ci(per_seed)}


def test_gain_picks_the_best_baseline_on_validation():
    test = {"none": _summary([0.70, 0.72]), "oversample": _summary([0.80, 0.81]),
            "smote": _summary([0.78, 0.79]), "gan": _summary([0.85, 0.87])}
    val = {"none": _summary([0.6, 0.6]), "oversample": _summary([0.7, 0.7]),
           "smote": _summary([0.75, 0.76]), "gan": _summary([0.99, 0.99])}
    g = Rec.gain(test, val)
    assert g["baseline"] == "smote" and g["selected_by"].startswith("validation")
    assert g["balanced_accuracy"]["per_seed"] == pytest.approx([0.07, 0.08])
    assert g["verdict"] == "gain" and g["significant"]
    # without validation the best non-GAN strategy on test is the baseline, never gan itself
    g = Rec.gain(test, None)
    assert g["baseline"] == "oversample" and "favours the baseline" in g["selected_by"]
    # the recommendation's baseline (its tie rule) is used when given
    g = Rec.gain(test, val, "gan", baseline="oversample")
    assert g["baseline"] == "oversample" and g["balanced_accuracy"]["per_seed"] == pytest.approx([0.05, 0.06])


def test_gain_verdicts_no_gain_single_seed_and_missing():
    test = {"none": _summary([0.80, 0.70]), "gan": _summary([0.82, 0.69])}
    g = Rec.gain(test, None)
    assert g["verdict"] == "no gain" and not g["significant"]
    assert Rec.gain({"none": _summary([0.8]), "gan": _summary([0.9])}, None)["verdict"] == "undetermined"
    assert Rec.gain({"none": _summary([0.8]), "gan": _summary([0.7])}, None)["verdict"] == "no gain"
    missing = Rec.gain({"none": _summary([0.8])}, None)
    assert missing["balanced_accuracy"] is None and "not run" in missing["reason"]
    alone = Rec.gain({"gan": _summary([0.8])}, None)
    assert alone["baseline"] is None and "non-GAN" in alone["reason"]


def test_metrics_from_a_hand_made_predictions_table():
    rows = []
    for strategy, preds in {"none": ([0, 0, 1, 1], [0, 1, 1, 1]), "gan": ([0, 0, 1, 1], [0, 0, 1, 1])}.items():
        for seed in (0, 1):
            for subset in ("test", "val"):
                rows += [dict(strategy=strategy, seed=seed, subset=subset, row=i, y_true=t, y_pred=p)
                         for i, (t, p) in enumerate(zip(*preds))]
    out = Rec.metrics_from_predictions(pd.DataFrame(rows), ("x", "y"))
    assert out["strategies"]["none"]["balanced_accuracy"]["mean"] == pytest.approx(0.75)
    assert out["strategies"]["gan"]["accuracy"]["ci95"] == [1.0, 1.0]
    assert out["gain"]["baseline"] == "none"
    assert out["gain"]["balanced_accuracy"]["mean"] == pytest.approx(0.25)
    assert "balanced_test" not in out


def test_balanced_test_gain_reads_the_same_strategy_and_baseline():
    rows = []
    preds = {"none": [0, 1, 1, 1], "oversample": [1, 0, 1, 0], "gan": [1, 1, 1, 1], "gan_policy": [0, 0, 1, 1]}
    for strategy, p in preds.items():
        for seed in (0, 1):
            for subset in ("test", "val", "balanced_test"):
                rows += [dict(strategy=strategy, seed=seed, subset=subset, row=i, y_true=t, y_pred=q)
                         for i, (t, q) in enumerate(zip([0, 0, 1, 1], p))]
    out = Rec.metrics_from_predictions(pd.DataFrame(rows), ("x", "y"))
    assert out["gain"]["strategy"] == "gan_policy" and out["gain"]["baseline"] == "none"
    bal = out["balanced_test"]["gain"]
    assert bal["strategy"] == "gan_policy" and bal["baseline"] == "none"
    assert bal["balanced_accuracy"]["mean"] == pytest.approx(1.0 - 0.75)


def test_balanced_subsample_is_balanced_and_seeded():
    labels = np.array([0] * 10 + [1] * 4 + [2] * 7)
    rows = E.balanced_subsample(labels, 4, seed=0)  # class 3 absent: ignored
    assert np.bincount(labels[rows]).tolist() == [4, 4, 4]
    assert np.array_equal(rows, E.balanced_subsample(labels, 4, seed=0))


def test_mismatched_tables_are_refused():
    t = _table()
    other = ImageTable(t.images, t.labels, ("a", "b", "z"))
    with pytest.raises(DataError, match="synthetic classes"):
        E.evaluate(_cfg(), E.EvalData(t, t, t, other), {}, progress=False)


# ---- integration on long-tailed digits ------------------------------------------------------------

def _jittered_copies(train: ImageTable, add: np.ndarray, seed: int) -> ImageTable:
    """A stand-in for GAN output: real images of the planned classes with +-24 grey-level noise."""
    rng = np.random.default_rng(seed)
    over = random_oversample(train, add, seed)
    syn = over.subset(np.arange(len(train), len(over)))
    noisy = np.clip(syn.images.astype(np.int16) + rng.integers(-24, 25, syn.images.shape), 0, 255)
    return ImageTable(noisy.astype(np.uint8), syn.labels, syn.class_names)


@pytest.fixture(scope="module")
def digits_run():
    train, val, test = long_tailed_digits([60, 45, 35, 25, 18, 13, 10, 7, 5, 4])
    plan = {name: int(60 - n) for name, n in train.counts_by_name().items()}
    synthetic = _jittered_copies(train, E.plan_counts(plan, train.class_names), seed=0)
    cfg = _cfg(seeds=2, epochs=2, batch_size=32, device="cpu")
    result = E.evaluate(cfg, E.EvalData(train, val, test, synthetic), plan, progress=False)
    return dict(result=result, train=train, val=val, test=test, synthetic=synthetic, plan=plan, cfg=cfg)


@pytest.mark.slow
def test_worker_processes_give_the_same_predictions_and_policy(digits_run):
    """Two spawned workers, one thread each, reproduce the in-process run exactly (policy included)."""
    d = digits_run
    runs = {}
    for workers in (1, 2):
        cfg = d["cfg"].model_copy(update={"workers": workers, "cpu_threads": 1, "gan_quality": False,
                                          "strategies": ["none", "gan", "gan_policy"]})
        data = E.EvalData(d["train"], d["val"], d["test"], d["synthetic"])
        runs[workers] = E.evaluate(cfg, data, d["plan"], progress=False)
    pd.testing.assert_frame_equal(runs[1]["predictions"], runs[2]["predictions"])
    assert runs[1]["metrics"]["mix_policy"] == runs[2]["metrics"]["mix_policy"]


@pytest.mark.slow
def test_metrics_do_not_depend_on_how_many_cores_were_free(digits_run, monkeypatch):
    """`workers: auto` resolves from the load at run time; metrics.json records the setting, so a
    rerun on a busier machine writes the same file (it is a DVC output, and the fault tests compare it)."""
    import pipeline.parallel as P
    d, metrics = digits_run, []
    cfg = d["cfg"].model_copy(update={"workers": "auto", "cpu_threads": 1, "gan_quality": False,
                                      "seeds": 1, "epochs": 1, "strategies": ["none", "gan"]})
    for free in (1, 2):
        monkeypatch.setattr(P, "free_cores", lambda free=free: free)
        monkeypatch.setattr(P, "available_cores", lambda: 2)
        m = E.evaluate(cfg, E.EvalData(d["train"], d["val"], d["test"], d["synthetic"]), d["plan"], progress=False)
        metrics.append({k: v for k, v in m["metrics"].items() if k != "timing_s"})
    assert metrics[0] == metrics[1] and metrics[0]["workers"] == "auto"


def test_one_judge_scores_the_policy_and_embeds_for_gan_quality(digits_run, monkeypatch):
    d, calls = digits_run, []
    real = E.fit_judge
    monkeypatch.setattr(E, "fit_judge", lambda *a, **k: calls.append((a[0], a[3].cpu_threads)) or real(*a, **k))
    cfg = d["cfg"].model_copy(update={"workers": 2, "seeds": 1, "epochs": 1, "strategies": ["gan_policy"]})
    data = E.EvalData(d["train"], d["val"], d["test"], d["synthetic"])
    m = E.evaluate(cfg, data, d["plan"], progress=False)["metrics"]
    assert calls == [("evaluate", 1)] and m["gan_quality"] is not None
    assert m["mix_policy"]["scores_from"] == "real-data judge (evaluate)" and m["timing_s"]["judge"] > 0
    calls.clear()  # scores given and no quality metrics: no judge at all
    cfg = cfg.model_copy(update={"gan_quality": False})
    scores = np.full(len(d["synthetic"]), 0.95, dtype=np.float32)
    E.evaluate(cfg, E.EvalData(d["train"], d["val"], d["test"], d["synthetic"], scores), d["plan"], progress=False)
    assert calls == []


@pytest.mark.slow
def test_every_strategy_runs_for_two_seeds(digits_run):
    m, pred = digits_run["result"]["metrics"], digits_run["result"]["predictions"]
    assert list(m["strategies"]) == list(S.STRATEGIES)
    assert m["skipped"] == {} and m["seeds"] == [0, 1]
    from pipeline.device import choose_precision  # evaluate.precision auto, as this machine resolves it
    assert m["precision"] == ("bf16" if choose_precision("auto", torch.device("cpu")) is not None else "fp32")
    for s in m["strategies"].values():
        for name in M.SCALAR_METRICS:
            assert len(s[name]["per_seed"]) == 2 and 0 <= s[name]["mean"] <= 1
            lo, hi = s[name]["ci95"]
            assert lo <= s[name]["mean"] <= hi
    assert set(pred.columns) >= {"strategy", "seed", "y_true", "y_pred", "subset"}
    n_test = len(digits_run["test"])
    assert (pred[pred["subset"] == "test"].groupby(["strategy", "seed"]).size() == n_test).all()
    assert m["gain"]["baseline"] in {n for n, s in S.STRATEGIES.items() if not s.uses_synthetic}
    assert m["recommendation"]["strategy"] in S.STRATEGIES and m["recommendation"]["rule"] == Rec.RECOMMEND_RULE
    assert m["balanced_test"]["gain"]["baseline"] == m["gain"]["baseline"]
    q = m["gan_quality"]
    assert {"fid", "kid", "intra_fid", "precision", "recall", "class_consistency", "memorization"} <= set(q)
    json.dumps(m, allow_nan=False)  # valid JSON: no NaN anywhere


@pytest.mark.slow
def test_metrics_means_equal_what_the_predictions_give(digits_run):
    m, pred = digits_run["result"]["metrics"], digits_run["result"]["predictions"]
    k = len(m["class_names"])
    for subset, summaries in (("test", m["strategies"]), ("balanced_test", m["balanced_test"]["strategies"])):
        for name, s in summaries.items():
            rows = pred[(pred["strategy"] == name) & (pred["subset"] == subset)]
            per_seed = [
                M.balanced_accuracy(M.confusion_matrix(g["y_true"].to_numpy(), g["y_pred"].to_numpy(), k))
                for _, g in rows.groupby("seed")
            ]
            assert s["balanced_accuracy"]["mean"] == pytest.approx(np.mean(per_seed))
            acc = (rows["y_true"] == rows["y_pred"]).groupby(rows["seed"]).mean()
            assert s["accuracy"]["mean"] == pytest.approx(acc.mean())
    # the balanced subsample really is balanced
    bal = pred[(pred["subset"] == "balanced_test") & (pred["strategy"] == "none") & (pred["seed"] == 0)]
    assert len(set(np.bincount(bal["y_true"]).tolist())) == 1


@pytest.mark.slow
def test_results_round_trip_through_files(digits_run, tmp_path):
    paths = results.write_results(tmp_path, digits_run["result"])
    assert [p.name for p in paths] == ["metrics.json", "predictions.parquet"]
    back = results.read_results(tmp_path)
    pd.testing.assert_frame_equal(back["predictions"], digits_run["result"]["predictions"])
    assert back["metrics"]["gain"] == json.loads(json.dumps(digits_run["result"]["metrics"]["gain"]))
    with pytest.raises(DataError, match="augment evaluate"):
        results.read_results(tmp_path / "nowhere")


@pytest.mark.slow
def test_without_synthetic_data_gan_strategies_are_skipped_with_a_reason(digits_run):
    d = digits_run
    cfg = _cfg(seeds=1, epochs=1, strategies=["none", "gan", "synthetic_only"], device="cpu")
    out = E.evaluate(cfg, E.EvalData(d["train"], d["val"], d["test"]), d["plan"], progress=False)["metrics"]
    assert list(out["strategies"]) == ["none"]
    assert "augment generate" in out["skipped"]["gan"] and "synthetic_only" in out["skipped"]
    assert out["gain"]["balanced_accuracy"] is None and out["gain"]["reason"]
    assert out["gan_quality"] is None and out["skipped"]["gan_quality"]
    with pytest.raises(DataError, match="no strategy can run"):
        E.evaluate(_cfg(strategies=["gan"]), E.EvalData(d["train"], d["val"], d["test"]), d["plan"], progress=False)


def test_min_steps_raises_epochs_on_small_sets_only():
    # 13 images, batch 4 -> batches 4, 4, 4, 1 and the batch of one is skipped: 3 steps an epoch,
    # so 10 steps need ceil(10 / 3) = 4 epochs; 14 images -> 4 steps an epoch -> 3 epochs
    assert T.epochs_for(13, _cfg(epochs=2, batch_size=4, min_steps=10)) == 4
    assert T.epochs_for(14, _cfg(epochs=2, batch_size=4, min_steps=10)) == 3
    assert T.epochs_for(13, _cfg(epochs=5, batch_size=4, min_steps=10)) == 5  # epochs already give 15 steps
    assert T.epochs_for(13, _cfg(epochs=2, batch_size=4)) == 2  # min_steps 0: epochs only
    assert T.epochs_for(1000, _cfg(epochs=1, batch_size=32, min_steps=10)) == 1


def _record_adam_steps(monkeypatch) -> list[float]:
    """The learning rate of every Adam step taken from now on, in order."""
    rates = []
    real_step = torch.optim.Adam.step

    def step(self, *a, **k):
        rates.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    return rates


def test_min_steps_counts_real_optimiser_steps(monkeypatch):
    steps = _record_adam_steps(monkeypatch)
    t = _table()  # 13 images
    T.train_classifier(R.TrainingSet(t), t, _cfg(epochs=1, batch_size=4, min_steps=10), seed=0, progress=False)
    assert len(steps) == 4 * 3  # four epochs of three steps (see above)


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_lr_schedule_by_hand(monkeypatch, schedule):
    rates = _record_adam_steps(monkeypatch)
    t = _table()  # 13 images, batch 4: 3 steps an epoch; min_steps 10 -> 4 epochs, 12 steps
    T.train_classifier(R.TrainingSet(t), t, _cfg(epochs=1, batch_size=4, min_steps=10, lr=0.01, lr_schedule=schedule),
                       seed=0, progress=False)
    assert len(rates) == 12
    if schedule == "constant":
        assert rates == [0.01] * 12
    else:  # step k runs at 0.01 * (1 + cos(pi k / 12)) / 2: from 0.01 down to 0.01 * 0.017 at k = 11
        expect = [0.01 * (1 + math.cos(math.pi * k / 12)) / 2 for k in range(12)]
        assert rates == pytest.approx(expect, rel=1e-9)
        assert rates[6] == pytest.approx(0.005) and rates[-1] == pytest.approx(1.7037e-4, rel=1e-3)
