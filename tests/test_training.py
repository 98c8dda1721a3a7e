"""The classifier trainer's recipes: weights and priors by hand, the phases, fresh synthetic draws,
the same optimiser steps for every strategy, and the validation-only recommendation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import classifier_recipe as R
from pipeline import config, params_file
from pipeline import evaluate as E
from pipeline import metrics as M
from pipeline import recommend as Rec
from pipeline import strategies as S
from pipeline import training as T
from pipeline.data import ImageTable
from tests.conftest import tiny_arrays

NAMES = ("a", "b", "c")


def _table(counts=(6, 4, 3), seed=0) -> ImageTable:
    x, y = tiny_arrays(counts, seed=seed)
    return ImageTable(x, y, NAMES)


def _cfg(**kw) -> config.EvaluateConfig:
    return params_file.build({}, {f"evaluate.{k}": v for k, v in {"device": "cpu", **kw}.items()}).evaluate


def _adam_steps(monkeypatch) -> list[int]:
    """The number of parameters each Adam step updates, in order."""
    seen = []
    real_step = torch.optim.Adam.step

    def step(self, *a, **k):
        seen.append(sum(len(g["params"]) for g in self.param_groups))
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    return seen


# ---- weights and priors by hand -----------------------------------------------------------------


def test_effective_number_weights_by_hand():
    # beta 0.5: n=1 -> 0.5/0.5 = 1, n=2 -> 0.5/0.75 = 2/3; scaled to sum 2 (two present classes): 1.2, 0.8
    w = R.effective_number_weights(np.array([1, 2, 0]), beta=0.5)
    assert w == pytest.approx([1.2, 0.8, 0.0])
    # beta -> 1 approaches inverse frequency: 1/n scaled
    w = R.effective_number_weights(np.array([10, 40]), beta=1 - 1e-9)
    assert w[0] / w[1] == pytest.approx(4.0, rel=1e-4)


def test_logit_prior_by_hand():
    assert R.logit_prior(np.array([1.0, 3.0])) == pytest.approx([math.log(0.25), math.log(0.75)])
    # a class with no mass gets the smallest present offset
    assert R.logit_prior(np.array([1.0, 3.0, 0.0]))[2] == pytest.approx(math.log(0.25))


def test_inverse_frequency_weights_by_hand():
    assert R.inverse_frequency_weights(np.array([6, 3, 0])) == pytest.approx([0.75, 1.5, 0.0])


def _run(train, recipe=R.Recipe(), synthetic=None, **cfg) -> T._Run:
    return T._Run(R.TrainingSet(train, recipe=recipe, synthetic=synthetic), train, _cfg(**cfg), 0, len(train))


def test_class_mass_counts_synthetic_rows_and_weights():
    train = _table((6, 4, 3))
    pool = _table((0, 4, 6), seed=5)
    use = R.SyntheticUse(pool, np.full(len(pool), 0.5, np.float32), per_epoch=np.array([0, 2, 3]))
    run = _run(train, R.Recipe(loss="logit_adjusted"), use)
    rows = run.epoch_rows(late=False)
    assert len(rows) == len(train) + 5
    # real 6, 4, 3 plus 0, 2, 3 synthetic rows weighing 0.5: 6, 5, 4.5
    assert run.class_mass(rows, False, run.weight_np) == pytest.approx([6.0, 5.0, 4.5])
    # class-balanced batches: the mean weight per class (real 1, synthetic 0.5): 1, 5/6, 4.5/6
    assert run.class_mass(rows, True, run.weight_np) == pytest.approx([1.0, 5 / 6, 0.75])


def test_fresh_draws_repeat_no_image_until_the_pool_is_used_up():
    train = _table((6, 4, 3))
    pool = _table((0, 4, 6), seed=5)
    use = R.SyntheticUse(pool, np.ones(len(pool), np.float32), per_epoch=np.array([0, 2, 3]))
    run = _run(train, synthetic=use)
    drawn = [run.epoch_rows(False)[len(train):] - len(train) for _ in range(2)]
    both = np.concatenate(drawn)
    assert sorted(both.tolist()) == list(range(len(pool)))  # two epochs use the pool exactly once
    assert np.bincount(pool.labels[drawn[0]], minlength=3).tolist() == [0, 2, 3]
    third = run.epoch_rows(False)[len(train):] - len(train)  # then a new permutation of each class
    assert np.bincount(pool.labels[third], minlength=3).tolist() == [0, 2, 3]


class _BrightIsSure(torch.nn.Module):
    """Logits [0, 5m, 5m] for an image of mean pixel m: classes 1 and 2 surer the brighter the image."""

    def forward(self, x):
        m = x.float().mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(m), 5 * m, 5 * m], dim=1)


def _hard_run(per_epoch: list[int], candidates: int):
    """A run on 6/4/3 real and 0/4/6 pool images whose classifier is `_BrightIsSure`."""
    train, pool = _table((6, 4, 3)), _table((0, 4, 6), seed=5)
    use = R.SyntheticUse(pool, np.ones(len(pool), np.float32), per_epoch=np.array(per_epoch), candidates=candidates)
    run = _run(train, synthetic=use)
    run.model = _BrightIsSure()
    return train, pool, run


def test_hard_draws_keep_the_rows_the_classifier_is_least_sure_of():
    # candidates 10 x the epoch's rows: more than each class's pool, so every row of the class is tried
    train, pool, run = _hard_run([0, 1, 2], candidates=10)
    rows = run.epoch_rows(False)[len(train):] - len(train)
    brightness = pool.images.reshape(len(pool), -1).astype(float).mean(axis=1)
    want = [np.flatnonzero(pool.labels == c)[np.argsort(brightness[pool.labels == c], kind="stable")[:n]]
            for c, n in ((1, 1), (2, 2))]
    assert rows.tolist() == sorted(np.concatenate(want).tolist())
    # candidates 1: the fresh draws as they come (the same count, no classifier asked)
    plain = _run(train, synthetic=R.SyntheticUse(pool, np.ones(len(pool), np.float32), per_epoch=np.array([0, 1, 2])))
    assert np.bincount(pool.labels[plain.epoch_rows(False)[len(train):] - len(train)], minlength=3).tolist() == [0, 1, 2]


def test_hard_draws_take_fresh_candidates_each_epoch():
    train, pool, run = _hard_run([0, 1, 1], candidates=2)
    tried = []
    real_hardest = run.hardest
    run.hardest = lambda rows, per_epoch: (tried.append(rows), real_hardest(rows, per_epoch))[1]
    kept = [run.epoch_rows(False)[len(train):] - len(train) for _ in range(2)]
    # 2 candidates per kept row: classes 1 and 2 each tried 2 fresh rows per epoch, 4 distinct over two epochs
    assert [np.bincount(pool.labels[t], minlength=3).tolist() for t in tried] == [[0, 2, 2], [0, 2, 2]]
    assert len(set(np.concatenate(tried).tolist())) == 8
    assert all(set(k) <= set(t) and len(k) == 2 for k, t in zip(kept, tried))


def test_late_synthetic_rows_join_only_in_the_late_phase():
    train, pool = _table((6, 4, 3)), _table((0, 2, 2), seed=5)
    for phase, recipe, early, late in (
        ("late", R.Recipe(class_weight="deferred"), 0, 4),
        ("head", R.Recipe(retrain_head=True), 0, 4),
        ("all", R.Recipe(), 4, 4),
    ):
        run = _run(train, recipe, R.SyntheticUse(pool, np.ones(4, np.float32), None, phase))
        assert len(run.epoch_rows(False)) - len(train) == early
        assert len(run.epoch_rows(True)) - len(train) == late


def test_class_balanced_batches_draw_classes_evenly():
    train = _table((40, 4, 2))
    run = _run(train, epochs=1, batch_size=8)
    idx = torch.cat(run.batches(np.arange(len(train)), balanced=True)).numpy()
    share = np.bincount(train.labels[idx], minlength=3) / len(idx)
    assert len(idx) == run.steps * 8 and np.all(np.abs(share - 1 / 3) < 0.2)


# ---- the loop ------------------------------------------------------------------------------------


def test_every_strategy_takes_the_real_sets_optimiser_steps(monkeypatch):
    steps = _adam_steps(monkeypatch)
    t, syn = _table((12, 6, 3)), _table((0, 6, 9), seed=3)
    tables = {"train": t, "val": t}
    cfg = _cfg(epochs=2, batch_size=4)
    counts = {}
    for name in ("none", "oversample", "gan", "gan_la", "mixup_drw"):
        steps.clear()
        ts = S.STRATEGIES[name].prepare(S.StrategyInputs(t, syn, np.array([0, 6, 9]), 0, cfg=cfg))
        E.fit_training_set(ts, tables, cfg, seed=0)
        counts[name] = len(steps)
    # 21 real images, batch 4: 5 full batches + a batch of one (skipped) = 5 steps, 2 epochs
    assert set(counts.values()) == {10}, counts


def test_decoupling_trains_only_the_head_in_its_late_phase(monkeypatch):
    steps = _adam_steps(monkeypatch)
    t = _table((12, 6, 3))
    before = T.train_classifier(R.TrainingSet(t), t, _cfg(epochs=4, batch_size=4), 0, progress=False)
    n_params = len(list(before.parameters()))
    steps.clear()
    model = T.train_classifier(R.TrainingSet(t, recipe=R.Recipe(retrain_head=True)), t, _cfg(epochs=4, batch_size=4),
                               0, progress=False)
    # 3 epochs of 5 steps on every parameter, then 1 epoch of 5 steps on the head's weight and bias
    assert steps == [n_params] * 15 + [2] * 5
    assert all(p.requires_grad for p in model.parameters()) and not model.training


def _first_offsets(monkeypatch, ts: R.TrainingSet, val) -> torch.Tensor:
    """What the first training batch's loss adds to the model's logits (the logit adjustment)."""
    losses, outputs = [], []
    real_ce, real_build = torch.nn.functional.cross_entropy, T.build_classifier

    def build(*a, **k):
        model = real_build(*a, **k)
        model.register_forward_hook(lambda m, _, out: outputs.append(out.detach().float()) if m.training else None)
        return model

    monkeypatch.setattr(T, "build_classifier", build)
    monkeypatch.setattr(T.F, "cross_entropy", lambda z, y, **k: losses.append(z.detach()) or real_ce(z, y, **k))
    T.train_classifier(ts, val, _cfg(epochs=1, batch_size=32), 0, progress=False)
    return losses[0] - outputs[0]


def test_logit_adjustment_offsets_the_training_logits_by_the_prior(monkeypatch):
    """The loss sees z + tau * log(prior), prior = the class shares of the training rows."""
    t = _table((12, 6, 3))
    offsets = _first_offsets(monkeypatch, R.TrainingSet(t, recipe=R.Recipe(loss="logit_adjusted", tau=0.5)), t)
    expect = 0.5 * np.log(np.array([12, 6, 3]) / 21)
    assert torch.allclose(offsets, torch.as_tensor(expect, dtype=torch.float32).expand_as(offsets), atol=1e-5)


@pytest.mark.parametrize("prior, expect", [("batches", [12, 8, 8]), ("real", [12, 6, 3])])
def test_the_logit_adjustment_prior_of_a_synthetic_mix(monkeypatch, prior, expect):
    """With a pool, the prior is the batches' class shares (real + synthetic) or, with
    `prior: real`, the real rows' alone."""
    t, pool = _table((12, 6, 3)), _table((0, 2, 5), seed=4)
    ts = R.TrainingSet(t, recipe=R.Recipe(loss="logit_adjusted", prior=prior),
                       synthetic=R.SyntheticUse(pool, np.ones(len(pool), np.float32)))
    offsets = _first_offsets(monkeypatch, ts, t)[0].numpy()
    assert offsets == pytest.approx(np.log(np.array(expect) / sum(expect)), abs=1e-5)


def test_drw_weights_change_only_in_the_late_phase():
    t = _table((12, 6, 3))
    run = _run(t, R.Recipe(class_weight="deferred", drw_beta=0.5, late_fraction=0.5), epochs=4)
    assert run.late_start == 2
    rows = run.epoch_rows(False)
    assert np.unique(run._phase_weight(rows, late=False)).tolist() == [1.0]
    late = run._phase_weight(rows, late=True)
    by_class = [float(late[t.labels == c][0]) for c in range(3)]
    assert by_class == pytest.approx(R.effective_number_weights(np.array([12, 6, 3]), 0.5).tolist())


@pytest.mark.parametrize("prior, counts", [("batches", [12, 8, 8]), ("real", [12, 6, 3])])
def test_drw_weights_of_a_synthetic_mix_read_the_real_counts_with_the_real_prior(prior, counts):
    """With a pool, DRW's late weights are the effective-number weights of the epoch's rows (real +
    synthetic) or, with `prior: real`, of the real rows alone; every row of a class gets its class's."""
    t, pool = _table((12, 6, 3)), _table((0, 2, 5), seed=4)
    use = R.SyntheticUse(pool, np.ones(len(pool), np.float32))
    run = _run(t, R.Recipe(class_weight="deferred", drw_beta=0.5, late_fraction=0.5, prior=prior), use, epochs=4)
    rows = run.epoch_rows(True)
    late = run._phase_weight(rows, late=True)
    labels = run.labels_np
    by_class = [np.unique(late[rows][labels[rows] == c]).tolist() for c in range(3)]
    expect = R.effective_number_weights(np.array(counts), 0.5).tolist()
    assert by_class == [pytest.approx([w]) for w in expect]
    assert np.unique(run._phase_weight(rows, late=False)).tolist() == [1.0]


@pytest.mark.parametrize("name", ["logit_adjust", "drw", "decouple", "mixup_drw", "gan_la", "gan_la_real_prior", "gan_drw",
                                  "gan_crt", "gan_mixup_drw", "gan_mixup_drw_real_prior"])
def test_each_recipe_learns_and_is_deterministic(name):
    train, val = _table((30, 12, 6)), _table((5, 5, 5), seed=1)
    syn = _table((0, 18, 24), seed=7)
    cfg = _cfg(epochs=4, batch_size=16)
    tables = {"train": train, "val": val}
    ts = S.STRATEGIES[name].prepare(S.StrategyInputs(train, syn, np.array([0, 18, 24]), 0, cfg=cfg))
    a, b = (E.fit_training_set(ts, tables, cfg, seed=3) for _ in range(2))
    for p1, p2 in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(p1, p2)
    assert M.balanced_accuracy(M.confusion_matrix(val.labels, T.predict(a, val.images), 3)) > 0.6


# ---- the recommendation ----------------------------------------------------------------------------


def _val_predictions(right: dict[str, list[list[int]]], labels: list[int], p_true: dict | None = None) -> pd.DataFrame:
    """A predictions table on `val`: right[strategy][seed][row] = 1 if that model got the row right;
    p_true[strategy] its p(true class) for every row (default 0.9 right, 0.1 wrong)."""
    rows = []
    for name, seeds in right.items():
        for seed, marks in enumerate(seeds):
            for row, (y, ok) in enumerate(zip(labels, marks)):
                p = (p_true or {}).get(name, 0.9 if ok else 0.1)
                rows.append({"strategy": name, "seed": seed, "subset": "val", "row": row, "y_true": y,
                             "y_pred": y if ok else (y + 1) % 3, "p_true": p})
    return pd.DataFrame(rows)


def _recommend(right, labels, p_true=None, select_by="balanced_accuracy"):
    pred = _val_predictions(right, labels, p_true)
    val = Rec.summarize_predictions(pred, 3, "val")
    return Rec.recommend(pred, val, 3, select_by=select_by)


LABELS = [0] * 8 + [1] * 8 + [2] * 4


def test_bootstrap_difference_by_hand():
    y = np.array(LABELS)
    same = M.bootstrap_balanced_difference(y, np.ones(20), np.ones(20), 3)
    assert same == {"mean": 0.0, "p5": 0.0, "p95": 0.0, "share_positive": 0.0}
    better = M.bootstrap_balanced_difference(y, np.ones(20), np.zeros(20), 3)
    assert better["mean"] == better["p5"] == 1.0
    # A gets one more image of class 2 right (of 4): +1/4 on that class, +1/12 balanced
    a = np.ones(20)
    b = a.copy()
    b[-1] = 0
    d = M.bootstrap_balanced_difference(y, a, b, 3)
    assert d["mean"] == pytest.approx(1 / 12) and d["p5"] == 0.0  # often the resample misses that image


def test_recommendation_keeps_the_baseline_when_the_gan_lead_is_noise():
    ok = [1] * 20
    one_more = [1] * 19 + [0]
    right = {"logit_adjust": [one_more, one_more], "oversample": [one_more[:10] + [0] + one_more[11:]] * 2,
             "gan_la": [ok, ok]}
    rec = _recommend(right, LABELS)
    assert rec["baseline"] == "logit_adjust" and rec["best_gan"] == "gan_la"
    assert rec["strategy"] == "logit_adjust" and not rec["uses_synthetic"]
    assert "within the validation noise" in rec["reason"]
    # the lead that would have counted: the observed lead plus its distance to the 5th percentile
    ev = rec["evidence"]
    assert ev["needed_lead"] == pytest.approx(ev["mean"] - ev["p5"]) and ev["needed_lead"] >= ev["mean"]
    assert f"a lead of about {100 * ev['needed_lead']:+.2f} would count" in rec["reason"]


def test_recommendation_takes_the_gan_strategy_when_it_leads_beyond_the_noise():
    half = [1, 0] * 10
    right = {"none": [half, half], "gan_drw": [[1] * 20, [1] * 20], "synthetic_only": [[1] * 20] * 2}
    rec = _recommend(right, LABELS)
    assert rec["strategy"] == "gan_drw" and rec["uses_synthetic"] and rec["evidence"]["p5"] > 0
    # synthetic_only is a diagnostic: never recommended, never the best GAN strategy
    assert rec["best_gan"] == "gan_drw"


def test_equal_validation_accuracy_is_decided_by_the_lower_balanced_nll():
    ok = [[1] * 20]
    rec = _recommend({"none": ok, "drw": ok, "logit_adjust": ok}, LABELS, p_true={"none": 0.6, "drw": 0.95, "logit_adjust": 0.9})
    assert rec["baseline"] == "drw" and rec["strategy"] == "drw"
    # without p_true (a table from before 0.4.0) the first listed wins the tie
    pred = _val_predictions({"none": ok, "drw": ok}, LABELS).drop(columns="p_true")
    assert Rec.recommend(pred, Rec.summarize_predictions(pred, 3, "val"), 3, select_by="balanced_accuracy")["baseline"] == "none"


def test_nll_selection_prefers_the_surer_model_over_one_more_lucky_image():
    """select_by=nll: `drw` gets one more of class 2's four images right (+1/12 balanced accuracy)
    but is barely sure of anything (p 0.4 on its right answers); logit_adjust is sure (0.95)."""
    miss_one = [1] * 19 + [0]
    p = {"drw": 0.4, "logit_adjust": 0.95}
    pred = _val_predictions({"drw": [[1] * 20], "logit_adjust": [miss_one]}, LABELS, p_true=p)
    val = Rec.summarize_predictions(pred, 3, "val")
    assert Rec.recommend(pred, val, 3, select_by="balanced_accuracy")["baseline"] == "drw"  # balanced accuracy: 1.0 against 11/12
    rec = Rec.recommend(pred, val, 3, select_by="nll")
    # NLL: drw -log 0.4 = 0.916 in every class; logit_adjust -log 0.95 = 0.051 (the helper gives
    # every row of a strategy the same p_true, its miss included)
    assert rec["baseline"] == "logit_adjust" and rec["strategy"] == "logit_adjust"
    assert Rec.validation_nll(pred, "drw") == pytest.approx(-math.log(0.4), rel=1e-6)
    assert "validation NLL" in rec["rule"] and rec["rule"] == Rec.recommend_rule("nll")


def test_strategies_within_the_validation_noise_of_the_baseline():
    """One image of class 2 (of 4) separates logit_adjust from drw: a lead of 1/12 that the
    resamples without that image (3/4 ** 4 = 32% of them) erase, so drw's p95 is 0; `none`, wrong
    on all of class 2, trails by 1/3 in every resample (p95 < 0)."""
    miss_one = [1] * 19 + [0]
    miss_class_2 = [1] * 16 + [0] * 4
    rec = _recommend({"logit_adjust": [[1] * 20], "drw": [miss_one], "none": [miss_class_2]}, LABELS)
    assert rec["baseline"] == "logit_adjust" and set(rec["within_noise"]) == {"drw"}
    d = rec["within_noise"]["drw"]
    assert d["mean"] == pytest.approx(-1 / 12) and d["p95"] == 0.0


def test_strongest_within_noise_breaks_a_validation_tie_by_the_published_order():
    miss_one = [1] * 19 + [0]
    miss_class_2 = [1] * 16 + [0] * 4
    right = {"none": [[1] * 20], "mixup_drw": [miss_one], "drw": [miss_one], "oversample": [miss_class_2]}
    pred = _val_predictions(right, LABELS)
    val = Rec.summarize_predictions(pred, 3, "val")
    assert Rec.recommend(pred, val, 3, select_by="balanced_accuracy")["baseline"] == "none"  # the accuracy pick
    # mixup_drw and drw are within the noise of `none` (one image of class 2); mixup_drw comes first
    rec = Rec.recommend(pred, val, 3)  # the default
    assert rec["baseline"] == "mixup_drw" and rec["rule"] == Rec.recommend_rule("strongest_within_noise")
    # beyond the noise (wrong on all of class 2) the prior does not apply: the accuracy pick stands
    right["mixup_drw"] = right["drw"] = [miss_class_2]
    pred = _val_predictions(right, LABELS)
    assert Rec.recommend(pred, Rec.summarize_predictions(pred, 3, "val"), 3,
                         select_by="strongest_within_noise")["baseline"] == "none"


def test_recommendation_without_a_gan_strategy_or_validation():
    right = {"none": [[1] * 20], "drw": [[0] * 20]}
    assert _recommend(right, LABELS)["strategy"] == "none"
    rec = Rec.recommend(pd.DataFrame(columns=["strategy", "seed", "subset", "row", "y_true", "y_pred"]), {}, 3)
    assert rec["strategy"] is None and "validation" in rec["reason"]


def test_fresh_pool_sampler_for_consumers():
    from pipeline.pool import FreshPoolSampler

    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    sampler = FreshPoolSampler(labels, {0: 2, 2: 2}, seed=1)
    epochs = [list(sampler) for _ in range(2)]
    assert len(sampler) == 4 and all(len(e) == 4 for e in epochs)
    class2 = [i for e in epochs for i in e if labels[i] == 2]
    assert sorted(class2) == [5, 6, 7, 8]  # two epochs use class 2's four rows once each
    assert all(labels[i] != 1 for e in epochs for i in e)
    assert [list(FreshPoolSampler(labels, {0: 2, 2: 2}, seed=1)) for _ in range(1)][0] == epochs[0]  # seeded
    loader = torch.utils.data.DataLoader(torch.arange(9), batch_size=2, sampler=FreshPoolSampler(labels, {1: 2}))
    assert sorted(torch.cat(list(loader)).tolist()) == [3, 4]
    with pytest.raises(ValueError, match=r"classes \[5\]"):
        FreshPoolSampler(labels, {5: 1})
