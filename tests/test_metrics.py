"""Classification metrics: against scikit-learn, calibration by hand, the JSON result, bad arguments."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from ferkit.evaluate import calibration, compute_metrics
from ferkit.evaluate.metrics import Calibration, Evaluation, Scores


def test_metrics_agree_with_sklearn():
    from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score, log_loss,
                                 precision_recall_fscore_support, top_k_accuracy_score)

    rng = np.random.default_rng(0)
    labels = ["a", "b", "c", "d", "e"]
    y = rng.choice([0, 1, 2, 4], size=200, p=[0.4, 0.3, 0.2, 0.1])  # class "d" has no image
    logits = rng.normal(size=(200, 5)) + 2.0 * np.eye(5)[y] * rng.random((200, 1))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ev = compute_metrics(y, probs, labels)
    pred = probs.argmax(1)
    ids = list(range(5))
    assert ev.accuracy == pytest.approx(accuracy_score(y, pred))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=ids, zero_division=0)
    for i, c in enumerate(labels):
        got = ev.per_class[c]
        assert (got.precision, got.recall, got.f1, got.support) == pytest.approx((p[i], r[i], f[i], s[i]))
    # Averages over the classes the data has: class "d" (no image) would add an F1 of 0 to the macro average.
    present = [0, 1, 2, 4]
    assert ev.macro_f1 == pytest.approx(f1_score(y, pred, labels=present, average="macro", zero_division=0))
    assert ev.macro_f1 > f1_score(y, pred, labels=ids, average="macro", zero_division=0)
    assert ev.weighted.f1 == pytest.approx(f1_score(y, pred, labels=ids, average="weighted", zero_division=0))
    assert ev.confusion == confusion_matrix(y, pred, labels=ids).tolist()
    assert ev.log_loss == pytest.approx(log_loss(y, probs, labels=ids))
    assert ev.top2_accuracy == pytest.approx(top_k_accuracy_score(y, probs, k=2, labels=ids))
    assert ev.absent_classes == ["d"] and ev.n == 200
    normalized = np.asarray(ev.confusion_normalized)
    assert np.allclose(normalized[[0, 1, 2, 4]].sum(1), 1) and not normalized[3].any()
    d = json.loads(json.dumps(ev.to_dict()))  # JSON-ready as it is
    assert d["macro_f1"] == ev.macro_f1 and d["per_class"]["d"]["support"] == 0


def test_expected_calibration_error_by_hand():
    probs = np.array([[0.9, 0.05, 0.05],  # bin (0.867, 0.933], right
                      [0.05, 0.9, 0.05],  # same bin, wrong
                      [0.58, 0.22, 0.2],  # bin (0.533, 0.6], right
                      [0.35, 0.33, 0.32]])  # bin (0.333, 0.4], right
    y = np.array([0, 2, 0, 0])
    cal = calibration(y, probs)
    # 2/4 * |1/2 - 0.9| + 1/4 * |1 - 0.58| + 1/4 * |1 - 0.35|
    assert cal.ece == pytest.approx(0.5 * 0.4 + 0.25 * 0.42 + 0.25 * 0.65)
    assert cal.bins == 15 and sum(cal.count) == 4
    assert cal.count[13] == 2 and cal.accuracy[13] == 0.5 and cal.confidence[13] == pytest.approx(0.9)
    assert cal.count[8] == 1 and cal.count[5] == 1 and cal.accuracy[0] is None and cal.confidence[0] is None
    assert compute_metrics(y, probs, ["x", "y", "z"]).ece == pytest.approx(cal.ece)


def test_calibration_bin_edges_are_closed_on_the_right():
    # A confidence exactly on an edge belongs to the bin below it; 1.0 to the last bin.
    probs = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.2, 0.8, 0.0]])
    cal = calibration(np.array([0, 0, 0]), probs, bins=5)
    assert cal.count == [0, 0, 1, 1, 1]  # 0.5 in (0.4, 0.6], 0.8 in (0.6, 0.8], 1.0 in (0.8, 1.0]
    assert cal.accuracy == [None, None, 1.0, 0.0, 1.0]
    assert cal.confidence[2] == pytest.approx(0.5) and cal.confidence[3] == pytest.approx(0.8)
    assert cal.ece == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert cal.to_dict() == {"bins": 5, "count": cal.count, "accuracy": cal.accuracy,
                             "confidence": cal.confidence, "ece": cal.ece}


def test_rows_that_do_not_sum_to_one_are_renormalised():
    y = np.array([0, 1, 1])
    probs = np.array([[2.0, 1.0, 1.0], [1.0, 3.0, 0.0], [1.0, 1.0, 2.0]])  # sums 4, 4, 4
    ev = compute_metrics(y, probs, ["a", "b", "c"])
    assert ev.log_loss == pytest.approx(-np.mean(np.log([0.5, 0.75, 0.25])))
    assert ev.calibration.confidence[7] == pytest.approx(0.5)  # 0.5 after dividing by 4, not 2.0
    assert ev.accuracy == pytest.approx(2 / 3) and ev.top2_accuracy == pytest.approx(1.0)


def test_calibration_of_one_image():
    cal = calibration(np.array([1]), np.array([[0.3, 0.7]]), bins=10)
    assert cal.ece == pytest.approx(0.3) and cal.count[6] == 1 and cal.accuracy[6] == 1.0


def test_a_class_never_predicted_has_precision_zero_without_warnings():
    # Class "b" has images but no answer: its precision is 0 by convention, and nothing warns about it.
    y = np.array([0, 1, 0, 0])
    probs = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ev = compute_metrics(y, probs, ["a", "b", "c"])
    assert ev.per_class["b"] == Scores(0.0, 0.0, 0.0, 1)
    assert ev.macro.precision == pytest.approx((2 / 3 + 0.0) / 2)  # averaged over a and b, the classes shown
    assert ev.confusion == [[2, 0, 1], [1, 0, 0], [0, 0, 0]]


def test_confusion_matrix_spans_every_model_class():
    # The last class has no image and no answer: its row and column stay, full of zeros.
    y = np.array([0, 1])
    ev = compute_metrics(y, np.array([[0.6, 0.3, 0.1], [0.3, 0.6, 0.1]]), ["a", "b", "c"])
    assert ev.confusion == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]


def test_top2_of_two_classes_is_always_right():
    ev = compute_metrics(np.array([0, 1]), np.array([[0.2, 0.8], [0.9, 0.1]]), ["a", "b"])
    assert ev.accuracy == 0.0 and ev.top2_accuracy == 1.0


def test_top2_counts_second_guesses():
    y = np.array([0, 1, 2])
    probs = np.array([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.5, 0.3, 0.2]])
    ev = compute_metrics(y, probs, ["a", "b", "c"])
    assert ev.accuracy == pytest.approx(1 / 3) and ev.top2_accuracy == pytest.approx(2 / 3)


def test_an_absent_class_keeps_its_row_and_column():
    y = np.array([0, 0, 1])
    probs = np.array([[0.1, 0.1, 0.8], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1]])  # predicts the absent class once
    ev = compute_metrics(y, probs, ["a", "b", "c"])
    assert ev.confusion == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]
    assert ev.per_class["c"] == Scores(0.0, 0.0, 0.0, 0)
    assert ev.absent_classes == ["c"]
    assert ev.confusion_normalized == [[0.5, 0.0, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    # Macro averages over a and b only: precision (1 + 1) / 2, recall (0.5 + 1) / 2.
    assert (ev.macro.precision, ev.macro.recall) == pytest.approx((1.0, 0.75))
    assert ev.macro.f1 == pytest.approx((2 / 3 + 1.0) / 2) and ev.macro.support == 3
    assert ev.weighted.recall == pytest.approx(2 / 3) and ev.weighted.support == 3


def test_result_dict_names_every_figure():
    y = np.array([0, 1, 1, 0])
    probs = np.array([[0.7, 0.3], [0.4, 0.6], [0.6, 0.4], [0.9, 0.1]])
    ev = compute_metrics(y, probs, ["a", "b"], bins=4)
    ev.seconds, ev.predict_seconds, ev.data, ev.split, ev.tta = 3.0, 2.0, "d.zip", "val", "tencrop"
    ev.checkpoints, ev.excluded_classes, ev.excluded_images, ev.warnings = ["r"], ["x"], 5, ["w"]
    d = ev.to_dict()
    assert d == {
        "accuracy": 0.75, "macro_f1": ev.macro.f1, "top2_accuracy": 1.0, "log_loss": ev.log_loss,
        "ece": ev.calibration.ece, "n": 4, "labels": ["a", "b"],
        "per_class": {"a": ev.per_class["a"].to_dict(), "b": ev.per_class["b"].to_dict()},
        "macro": ev.macro.to_dict(), "weighted": ev.weighted.to_dict(),
        "confusion_matrix": [[2, 0], [1, 1]], "confusion_matrix_normalized": [[1.0, 0.0], [0.5, 0.5]],
        "calibration": ev.calibration.to_dict(), "absent_classes": [], "excluded_classes": ["x"],
        "excluded_images": 5, "warnings": ["w"], "checkpoints": ["r"], "data": "d.zip", "split": "val",
        "tta": "tencrop", "seconds": 3.0, "predict_seconds": 2.0, "images_per_s": 2.0,
    }
    assert ev.per_class["b"].to_dict() == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3),
                                           "support": 2}
    assert ev.calibration.bins == 4 and ev.ece == ev.calibration.ece


def test_images_per_s_is_zero_before_anything_was_timed():
    ev = compute_metrics(np.array([0]), np.array([[1.0, 0.0]]), ["a", "b"])
    assert ev.predict_seconds == 0.0 and ev.images_per_s == 0.0
    assert isinstance(ev, Evaluation) and isinstance(ev.calibration, Calibration)


@pytest.mark.parametrize(("y", "probs", "message"), [
    (np.array([0, 1]), np.ones((2, 2)), r"expected probabilities \(2, 3\), got \(2, 2\)"),
    (np.array([0, 1]), np.ones((3, 3)), r"expected probabilities \(2, 3\), got \(3, 3\)"),
    (np.array([0, 1]), np.ones(3), r"expected probabilities \(2, 3\), got \(3,\)"),
    (np.array([], np.int64), np.ones((0, 3)), "no images to evaluate"),
    (np.array([0, 3]), np.ones((2, 3)), r"labels must be indices in \[0, 3\), got 0\.\.3"),
    (np.array([-1, 2]), np.ones((2, 3)), r"labels must be indices in \[0, 3\), got -1\.\.2"),
])
def test_bad_arguments_say_what_is_wrong(y, probs, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        compute_metrics(y, probs, ["a", "b", "c"])
