"""fairtrain.evaluation.baseline on a small synthetic problem (about a second)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import make_classification

from fairtrain.evaluation.baseline import baseline_models, fit_baselines


@pytest.fixture(scope="module")
def separable():
    """500 rows, 12 float32 features (6 informative), float32 0/1 labels like target_vector's."""
    x, y = make_classification(
        n_samples=500, n_features=12, n_informative=6, class_sep=1.5, flip_y=0.02, random_state=0
    )
    x, y = x.astype(np.float32), y.astype(np.float32)
    return x[:400], y[:400], x[400:], y[400:]


@pytest.fixture(scope="module")
def fitted(separable):
    return fit_baselines(*separable, seed=0)


def test_both_baselines_learn_the_problem(fitted):
    assert set(fitted) == {"logistic_regression", "hist_gradient_boosting"}
    for name, scores in fitted.items():
        assert set(scores) == {"roc_auc", "accuracy", "log_loss", "fit_seconds"}
        assert scores["roc_auc"] > 0.85, name
        assert scores["accuracy"] > 0.75, name
        assert 0 < scores["log_loss"] < np.log(2), name  # better than predicting 1/2 for everyone
        # Reported in JSON as a plain float rounded to milliseconds (its value is wall-clock).
        seconds = scores["fit_seconds"]
        assert type(seconds) is float and seconds == round(seconds, 3), seconds
    json.dumps(fitted)


def test_same_seed_gives_the_same_metrics(separable, fitted):
    again = fit_baselines(*separable, seed=0)
    for name in fitted:
        assert {k: v for k, v in again[name].items() if k != "fit_seconds"} == {
            k: v for k, v in fitted[name].items() if k != "fit_seconds"
        }


def test_models_are_unfitted_and_carry_the_seed():
    models = baseline_models(seed=11)
    assert all(model.get_params()["random_state"] == 11 for model in models.values())
    assert not any(hasattr(model, "classes_") for model in models.values())


def test_single_class_training_labels_raise(separable):
    x_train, _, x_test, y_test = separable
    with pytest.raises(ValueError, match="both classes"):
        fit_baselines(x_train, np.zeros(len(x_train)), x_test, y_test, seed=0)


def test_mismatched_lengths_raise(separable):
    x_train, y_train, x_test, y_test = separable
    with pytest.raises(ValueError, match="differ in length"):
        fit_baselines(x_train, y_train[:-1], x_test, y_test, seed=0)
