"""Each mixing knob changes the training set exactly as specified, on tiny hand-made data."""

import numpy as np
import pytest

from pipeline.data import ImageTable
from pipeline.mixing import MixPolicy, mix, policy_grid, select_synthetic


def table(labels, fill=0):
    labels = np.asarray(labels, dtype=np.int64)
    images = np.full((len(labels), 2, 2, 1), fill, dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(len(labels))  # row id, to see which rows were kept
    return ImageTable(images, labels, ("a", "b"))


REAL = table([0, 0, 0, 0, 1])                       # a: 4 real, b: 1 real
SYN = table([1, 1, 1, 1, 1, 0, 0], fill=9)           # b: 5 synthetic, a: 2 synthetic
SCORES = np.array([0.2, 0.95, 0.5, 0.99, 0.7, 0.1, np.nan])
TABLES = {"train": REAL, "val": REAL, "synthetic": SYN}


def test_all_is_everything():
    assert select_synthetic(REAL.counts(), SYN.labels, SCORES, MixPolicy()).tolist() == list(range(7))


def test_cap_ratio_keeps_best_scores_per_class():
    # b has 1 real image: cap 2x -> the two best b rows (0.99 at 3, 0.95 at 1); a: cap 8 -> both
    rows = select_synthetic(REAL.counts(), SYN.labels, SCORES, MixPolicy(cap_ratio=2))
    assert rows.tolist() == [1, 3, 5, 6]
    rows = select_synthetic(REAL.counts(), SYN.labels, SCORES, MixPolicy(cap_ratio=0.25))
    assert rows.tolist() == [5]  # a: floor(0.25*4)=1 -> best is 0.1 over NaN; b: floor(0.25)=0


def test_min_score_drops_low_and_unscored():
    rows = select_synthetic(REAL.counts(), SYN.labels, SCORES, MixPolicy(min_score=0.6))
    assert rows.tolist() == [1, 3, 4]


def test_weights_and_order():
    t, w = mix(REAL, SYN, SCORES, MixPolicy(min_score=0.6, synthetic_weight=0.5))
    assert t.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert w.tolist() == [1, 1, 1, 1, 1, 0.5, 0.5, 0.5]
    assert t.images[5:, 0, 1, 0].tolist() == [9, 9, 9]


def test_graded_trust_weighs_each_synthetic_image_by_its_score():
    t, w = mix(REAL, SYN, SCORES, MixPolicy(min_score=0.6, synthetic_weight=0.5, trust=True))
    # kept rows 1, 3, 4 (scores 0.95, 0.99, 0.7) at 0.5 x score
    assert w[5:].tolist() == pytest.approx([0.475, 0.495, 0.35])
    _, w = mix(REAL, SYN, SCORES, MixPolicy(synthetic_weight=2.0, trust=True))
    assert w[-1] == pytest.approx(2.0)  # the unscored (NaN) row keeps synthetic_weight


def test_partial_fill_duplicates_real_images_then_adds_synthetic_on_top():
    # real a: 4, b: 1; fill 1.0 -> b duplicated up to 4 (3 copies of its one image), then b's and a's
    # synthetic rows that pass min_score 0.6 (3 of b)
    t, w = mix(REAL, SYN, SCORES, MixPolicy(min_score=0.6, real_fill=1.0), seed=3)
    assert t.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]
    assert t.images[5:8, 0, 0, 0].tolist() == [4, 4, 4] and t.images[5:8, 0, 1, 0].tolist() == [0, 0, 0]  # real copies
    assert t.images[8:, 0, 1, 0].tolist() == [9, 9, 9]  # then synthetic
    assert w.tolist() == [1.0] * 11
    half, _ = mix(REAL, SYN, SCORES, MixPolicy(cap_ratio=0, real_fill=0.5))
    assert half.labels.tolist() == [0, 0, 0, 0, 1, 1]  # b up to floor(0.5 * 4) = 2: plain oversampling


def test_grid_carries_trust_and_fill_and_names_them():
    grid = policy_grid([0, None], [0.0], [1.0], [False], ("ce",), (False, True), (0.0, 0.5))
    assert MixPolicy(None, 0.0, 1.0, False, "ce", True, 0.5) in grid
    assert all(not p.trust for p in grid if p.cap_ratio == 0)  # trust means nothing without synthetic rows
    assert len(grid) == 2 + 4
    assert MixPolicy(None, 0.0, 1.0, False, "logit_adjusted", True, 0.5).name == "cap=all score>=0 w=1 +la +trust fill=0.5"


def test_class_weight_balances_effective_counts():
    t, w = mix(REAL, SYN, SCORES, MixPolicy(min_score=0.6, synthetic_weight=0.5, class_weight=True))
    # effective counts: a = 4, b = 1 + 3 * 0.5 = 2.5 -> per-class totals must be equal
    total_a = w[t.labels == 0].sum()
    total_b = w[t.labels == 1].sum()
    assert total_a == pytest.approx(total_b)
    assert w[5] == pytest.approx(0.5 * w[4])


def test_a_mix_without_synthetic_images_weighs_classes_as_the_class_weight_strategy():
    """cap 0 + class weighting is the class_weight baseline: the same weights bit for bit, hence the
    same classifier (with other weights of the same ratios, rounding made a seed diverge by 3.6
    points of balanced accuracy on USPS-LT)."""
    import torch

    from pipeline.params_file import build
    from pipeline.classifier_recipe import TrainingSet, inverse_frequency_weights
    from pipeline.training import train_classifier
    from tests.conftest import tiny_arrays

    t, w = mix(REAL, SYN, SCORES, MixPolicy(cap_ratio=0.0, class_weight=True))
    assert len(t) == len(REAL) and w.dtype == np.float32
    expect = inverse_frequency_weights(REAL.counts())[REAL.labels].astype(np.float32)
    assert w.tobytes() == expect.tobytes()
    x, y = tiny_arrays((12, 5, 3), seed=0)
    real = ImageTable(x, y, ("a", "b", "c"))
    t, w = mix(real, real.subset(np.zeros(0, dtype=np.int64)), np.zeros(0), MixPolicy(cap_ratio=0.0, class_weight=True))
    cfg = build({}, {"evaluate.epochs": 2, "evaluate.batch_size": 4, "evaluate.device": "cpu"}).evaluate
    by_policy = train_classifier(TrainingSet(t, sample_weight=w), real, cfg, seed=1, progress=False)
    weighted = TrainingSet(real, class_weight=inverse_frequency_weights(real.counts()))
    baseline = train_classifier(weighted, real, cfg, seed=1, progress=False)
    for a, b in zip(by_policy.state_dict().values(), baseline.state_dict().values()):
        assert torch.equal(a, b)


def test_grid_is_the_product():
    grid = policy_grid([None, 1], [0.0, 0.9], [1.0], [False, True])
    assert len(grid) == 8
    assert grid[0] == MixPolicy(None, 0.0, 1.0, False)
    assert len({p.name for p in grid}) == 8


def test_a_zero_cap_is_tried_once_per_class_weight_setting():
    grid = policy_grid([0, None], [0.0, 0.9], [0.5, 1.0], [True])
    assert grid[0] == MixPolicy(0.0, 0.0, 1.0, True) and grid[0].name == "cap=0x score>=0 w=1+cw"
    assert len(grid) == 1 + 4
    assert len(select_synthetic(REAL.counts(), SYN.labels, SCORES, grid[0])) == 0


@pytest.mark.slow
def test_policy_selection_never_reads_the_test_split():
    """Poisoned test labels change the test metrics but not the policy chosen on validation."""
    from pipeline import params_file
    from pipeline.data import impose_long_tail, stratified_split
    from pipeline.evaluate import EvalData, evaluate
    from pipeline.sources import ImageSpec, read_source

    digits = read_source("digits", ImageSpec()).train
    pool, test = stratified_split(digits, 0.3, seed=1)
    train, val = stratified_split(pool, 0.2, seed=2)
    train = impose_long_tail(train, [60, 50, 40, 30, 20, 15, 10, 8, 6, 5], seed=0)
    rng = np.random.default_rng(0)
    # stand-in synthetic images: noisy copies of real ones, with some deliberately mislabelled
    pick = rng.integers(0, len(pool), 300)
    noisy = np.clip(pool.images[pick].astype(int) + rng.integers(-40, 40, pool.images[pick].shape), 0, 255)
    labels = np.where(rng.random(300) < 0.3, rng.integers(0, 10, 300), pool.labels[pick])
    synthetic = ImageTable(noisy.astype(np.uint8), labels, digits.class_names)
    scores = rng.random(300).astype(np.float32)
    cfg = params_file.build({}, {"evaluate.strategies": ["class_weight", "gan_policy"], "evaluate.seeds": 2,
                            "evaluate.epochs": 2, "evaluate.gan_quality": False,
                            "evaluate.mix.cap_ratio": [1, None], "evaluate.mix.min_score": [0.0, 0.5],
                            "evaluate.mix.synthetic_weight": [1.0]}).evaluate
    plan = {n: 0 for n in digits.class_names}
    clean = evaluate(cfg, EvalData(train, val, test, synthetic, scores), plan, progress=False)
    poisoned_test = ImageTable(test.images, (test.labels + 1) % 10, test.class_names)
    poisoned = evaluate(cfg, EvalData(train, val, poisoned_test, synthetic, scores), plan, progress=False)
    assert clean["metrics"]["mix_policy"] == poisoned["metrics"]["mix_policy"]
    assert len(clean["metrics"]["mix_policy"]["grid"]) == 2 + 4  # class weighting off/on, then 2 caps x 2 scores
    bal = lambda r: r["metrics"]["strategies"]["gan_policy"]["balanced_accuracy"]["mean"]
    assert bal(clean) != bal(poisoned)
    assert clean["metrics"]["gain"]["strategy"] == "gan_policy"


def test_equal_validation_accuracy_is_decided_by_the_lower_nll(monkeypatch):
    """A saturated validation set (every policy at 100%) falls back to the class-balanced NLL."""
    from pipeline import mixing, params_file

    cfg = params_file.build({}, {"evaluate.mix.cap_ratio": [1, 4, None], "evaluate.mix.min_score": [0.0],
                            "evaluate.mix.synthetic_weight": [1.0], "evaluate.mix.class_weight": [True],
                            "evaluate.workers": 1}).evaluate
    canned = {3: (1.0, 0.30), 6: (1.0, 0.10), 7: (0.99, 0.01)}  # synthetic rows kept -> (bal. acc, NLL)
    monkeypatch.setattr(mixing, "train_classifier", lambda ts, *a, **k: len(ts.table) - len(REAL))
    monkeypatch.setattr(mixing, "validation_scores", lambda kept, val: canned[kept])
    from pipeline.mixing import choose_policy

    report, chosen = choose_policy(TABLES, SCORES, cfg)
    policy, scores = chosen.policy, chosen.scores
    assert [r["synthetic_rows"] for r in report["grid"]] == [3, 6, 7]
    assert report["chosen"]["name"].startswith("cap=4x") and report["chosen"]["val_balanced_nll"] == 0.10
    assert policy.cap_ratio == 4 and scores is SCORES
    assert len(mix(REAL, SYN, scores, policy)[0]) == len(chosen.table(REAL, SYN)[0]) == len(REAL) + 6
    assert "NLL" in report["selected_by"]


@pytest.mark.parametrize("zero_cap", [True, False])
def test_staged_search_decides_class_weighting_on_the_real_data_first(monkeypatch, zero_cap):
    """Stage 1 trains cap 0 with and without class weights; stage 2 runs the synthetic grid with the
    winner only (3 classifiers, not 2 x 2 + 2); the zero-cap rows are choosable only if 0 is a cap."""
    from pipeline import mixing, params_file
    from pipeline.mixing import choose_policy

    caps = [0, 4, None] if zero_cap else [4, None]
    cfg = params_file.build({}, {"evaluate.mix.cap_ratio": caps, "evaluate.mix.min_score": [0.0],
                            "evaluate.mix.synthetic_weight": [1.0], "evaluate.mix.class_weight": [False, True],
                            "evaluate.workers": 1}).evaluate
    trained = []

    def fake_train(ts, val, cfg, seed, **k):
        weighted = not np.allclose(ts.sample_weight, ts.sample_weight[0])  # class weights make them unequal
        trained.append((len(ts.table) - len(REAL), weighted))
        return trained[-1]

    # without class weights is better on the real data alone and best overall
    canned = {(0, False): (0.95, 0.2), (0, True): (0.90, 0.3), (6, False): (0.93, 0.2), (7, False): (0.94, 0.2)}
    monkeypatch.setattr(mixing, "train_classifier", fake_train)
    monkeypatch.setattr(mixing, "validation_scores", lambda model, val: canned[model])
    report, chosen = choose_policy(TABLES, SCORES, cfg)
    assert trained == [(0, False), (0, True), (6, False), (7, False)]
    assert [(r["stage"], r["eligible"]) for r in report["grid"]] == [(1, zero_cap), (1, zero_cap), (2, True), (2, True)]
    assert report["search"] == "staged"
    if zero_cap:
        assert chosen.policy == MixPolicy(0.0, 0.0, 1.0, False) and report["chosen"]["synthetic_rows"] == 0
    else:
        assert chosen.policy == MixPolicy(None, 0.0, 1.0, False)  # 0.94: the best row that adds synthetic images

    trained.clear()
    full = cfg.model_copy(update={"mix": cfg.mix.model_copy(update={"search": "full"})})
    canned.update({(6, True): (0.97, 0.1), (7, True): (0.96, 0.1)})
    report, chosen = choose_policy(TABLES, SCORES, full)
    assert len(trained) == (6 if zero_cap else 4)
    assert chosen.policy == MixPolicy(4.0, 0.0, 1.0, True)  # the full product finds the weighted mix
