"""Classification metrics and intervals over seeds against hand-computed values, scikit-learn and imbalanced-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from imblearn.metrics import geometric_mean_score
from sklearn.metrics import balanced_accuracy_score, f1_score

from pipeline import metrics as M

# y_true 0 0 1 1 2 2 / y_pred 0 1 1 1 0 0: class 2 is never recalled
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
Y_PRED = np.array([0, 1, 1, 1, 0, 0])


def test_confusion_matrix_rows_are_true_classes():
    cm = M.confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [2, 0, 0]]


def test_scores_with_a_zero_recall_class_by_hand():
    m = M.classification_metrics(Y_TRUE, Y_PRED, 3)
    assert m["per_class_recall"] == [0.5, 1.0, 0.0]
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    # F1 = 2TP / (2TP + FP + FN): class 0: 2/(2+2+1); class 1: 4/(4+1+0); class 2: 0
    assert m["macro_f1"] == pytest.approx((2 / 5 + 4 / 5 + 0.0) / 3)
    assert m["g_mean"] == 0.0  # one class with recall 0 zeroes the geometric mean


def test_g_mean_nonzero_by_hand():
    m = M.classification_metrics(np.array([0, 0, 1]), np.array([0, 1, 1]), 2)
    assert m["per_class_recall"] == [0.5, 1.0]
    assert m["g_mean"] == pytest.approx(math.sqrt(0.5 * 1.0))
    assert m["balanced_accuracy"] == pytest.approx(0.75)
    assert m["macro_f1"] == pytest.approx(2 / 3)


def test_class_absent_from_test_is_left_out():
    m = M.classification_metrics(np.array([0, 1]), np.array([0, 1]), 3)
    assert math.isnan(m["per_class_recall"][2])
    assert m["balanced_accuracy"] == 1.0 and m["g_mean"] == 1.0 and m["macro_f1"] == 1.0


def test_scores_match_scikit_learn_and_imbalanced_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 400)
    pred = np.where(rng.random(400) < 0.7, y, rng.integers(0, 5, 400))
    m = M.classification_metrics(y, pred, 5)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["g_mean"] == pytest.approx(geometric_mean_score(y, pred))


def test_mean_ci_student_t_on_a_known_sample():
    # mean 3, sd sqrt(2.5), t(0.975, 4) = 2.776445 -> half width 2.776445 * 1.581139 / sqrt(5) = 1.963243
    out = M.mean_ci([1, 2, 3, 4, 5])
    assert out["mean"] == 3.0
    assert out["ci95"] == pytest.approx([3 - 1.963243, 3 + 1.963243], abs=1e-6)
    assert out["per_seed"] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_mean_ci_single_seed_clip_and_nan():
    assert M.mean_ci([0.7])["ci95"] == [0.7, 0.7]
    clipped = M.mean_ci([0.9, 1.0], bounds=(0.0, 1.0))
    assert clipped["ci95"][1] == 1.0 and clipped["ci95"][0] < 0.9
    assert M.mean_ci([0.5, float("nan"), 0.7])["mean"] == pytest.approx(0.6)
    assert M.mean_ci([float("nan")]) == {"mean": None, "ci95": [None, None], "per_seed": [None]}


def test_paired_difference_by_hand():
    # differences 0.1, 0.05, 0.05: mean 1/15, sd 0.0288675, t(0.975, 2) = 4.302653
    out = M.paired_difference([0.8, 0.9, 0.85], [0.7, 0.85, 0.8])
    half = 4.302653 * 0.0288675 / math.sqrt(3)
    assert out["mean"] == pytest.approx(1 / 15)
    assert out["ci95"] == pytest.approx([1 / 15 - half, 1 / 15 + half], abs=1e-6)
    with pytest.raises(ValueError, match="as many seeds"):
        M.paired_difference([0.1], [0.1, 0.2])


def test_summarize_runs_means_and_shapes():
    runs = [M.classification_metrics(Y_TRUE, Y_PRED, 3), M.classification_metrics(Y_TRUE, Y_TRUE, 3)]
    s = M.summarize_runs(runs)
    assert s["accuracy"]["per_seed"] == [0.5, 1.0]
    assert s["per_class_recall"]["mean"] == [0.75, 1.0, 0.5]
    assert len(s["per_class_recall"]["ci95"]) == 3
    assert s["confusion"][2] == [1.0, 0.0, 1.0]


def test_best_strategy_ties_go_to_the_first():
    assert M.best_strategy({"a": 0.5, "b": 0.7, "c": 0.7}) == "b"
    with pytest.raises(ValueError):
        M.best_strategy({})


def test_balanced_log_loss_by_hand():
    # class 0: p = 0.5, 0.25 -> mean NLL (ln 2 + ln 4) / 2 = 1.5 ln 2; class 1: p = 1 -> 0
    y, p = np.array([0, 0, 1]), np.array([0.5, 0.25, 1.0])
    assert M.balanced_log_loss(y, p) == pytest.approx((1.5 * math.log(2) + 0.0) / 2)
    # a frequent class does not dominate: 100 perfect images of class 1 weigh as much as one
    y2, p2 = np.r_[[0], np.ones(100, int)], np.r_[[math.exp(-2)], np.ones(100)]
    assert M.balanced_log_loss(y2, p2) == pytest.approx(1.0)
    assert M.balanced_log_loss([0], [0.0]) == pytest.approx(-math.log(1e-7))  # clipped, finite
    with pytest.raises(ValueError, match="shape"):
        M.balanced_log_loss([0, 1], [0.5])
