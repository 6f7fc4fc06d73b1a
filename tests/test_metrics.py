import numpy as np
import pytest
from matplotlib.figure import Figure

from mammo_core.metrics import (binary_metrics, confusion, confusion_figure,
                                learning_curves_figure, roc_figure, time_to_quality_figure)


def test_known_values():
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    probs = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.1, 0.1, 0.3])
    m = binary_metrics(labels, probs)
    assert m["sensitivity"] == pytest.approx(0.75)
    assert m["specificity"] == pytest.approx(0.75)
    assert m["precision"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["f1"] == pytest.approx(0.75)
    assert m["f2"] == pytest.approx(0.75)
    assert m["auc"] == pytest.approx(14 / 16)
    np.testing.assert_array_equal(confusion(labels, probs), [[3, 1], [1, 3]])


def test_f2_weights_recall():
    labels = np.array([1, 1, 1, 1, 0, 0])
    high_recall = binary_metrics(labels, np.array([0.9, 0.9, 0.9, 0.9, 0.9, 0.9]))
    assert high_recall["f2"] > high_recall["f1"]


def test_threshold_and_empty_denominators():
    labels = np.array([0, 1])
    m = binary_metrics(labels, np.array([0.2, 0.4]), threshold=0.5)
    assert m["precision"] == 0.0 and m["f1"] == 0.0 and m["auc"] == 1.0
    assert binary_metrics(labels, np.array([0.2, 0.4]), threshold=0.3)["sensitivity"] == 1.0


def test_balanced_accuracy_is_the_mean_of_sensitivity_and_specificity():
    from mammo_core.metrics import balanced_accuracy

    labels = np.array([0, 0, 0, 0, 1, 1])
    m = binary_metrics(labels, np.array([0.1, 0.2, 0.3, 0.8, 0.9, 0.4]), threshold=0.5)
    assert (m["sensitivity"], m["specificity"]) == (0.5, 0.75)
    assert balanced_accuracy(m) == 0.625


def test_single_class_labels_rejected():
    with pytest.raises(ValueError, match="both classes"):
        binary_metrics(np.array([1, 1]), np.array([0.5, 0.6]))


def test_figures_render():
    labels = np.array([0, 1, 0, 1])
    probs = np.array([0.1, 0.8, 0.4, 0.6])
    assert isinstance(roc_figure(labels, probs), Figure)
    assert isinstance(confusion_figure(confusion(labels, probs), ["n", "m"]), Figure)
    curves = learning_curves_figure({"loss": [1, 0.5], "val_loss": [1, 0.7], "auc": [0.6, 0.8]})
    assert isinstance(curves, Figure)


def test_time_to_quality_figure_draws_a_step_line_per_curve_in_minutes():
    fig = time_to_quality_figure({"fold 0": ([5, 60, 130], [0.7, 0.9, 0.95]),
                                  "fold 1": ([200, 320], [0.8, 0.97]), "fold 2": ([], [])})
    for ax in fig.axes:
        assert [line.get_label() for line in ax.get_lines()] == ["fold 0", "fold 1"]
        assert list(ax.get_lines()[1].get_xdata()) == [200 / 60, 320 / 60]
        assert "min" in ax.get_xlabel() and "best validation AUC" in ax.get_ylabel()
    assert fig.axes[1].get_ylim()[0] == pytest.approx(0.93)  # just below the lowest final


def test_explanation_figure_has_a_row_per_patch_and_a_column_per_method():
    from mammo_core.metrics import explanation_figure

    patches = np.random.default_rng(0).random((2, 60, 60))
    maps = {"Grad-CAM": (patches, False), "SHAP": (patches - 0.5, True)}
    figure = explanation_figure(patches, maps, ["a", "b"], "title")
    assert len(figure.axes) == 6


def test_several_classes_macro_auc_recall_and_a_k_by_k_confusion():
    from mammo_core.metrics import multiclass_metrics, per_class_roc_figure, scores

    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([[.8, .1, .1], [.6, .3, .1], [.2, .7, .1], [.5, .4, .1],
                      [.1, .1, .8], [.1, .2, .7]])
    m = multiclass_metrics(labels, probs)
    assert m["auc"] == pytest.approx(np.mean([m["auc_0"], m["auc_1"], m["auc_2"]]))
    assert m["accuracy"] == pytest.approx(5 / 6) and m["recall_1"] == pytest.approx(0.5)
    assert m["balanced_accuracy"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert scores(labels, probs) == m
    np.testing.assert_array_equal(confusion(labels, probs), [[2, 0, 0], [1, 1, 0], [0, 0, 2]])
    assert isinstance(per_class_roc_figure(labels, probs, ["a", "b", "c"]), Figure)
