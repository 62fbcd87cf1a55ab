"""Reference models fitted on the same features as the network: how good is "good"?

A logistic regression and a gradient-boosted tree ensemble from scikit-learn, on the pipeline's
preprocessed float32 matrix. If the network does not beat them on the test split, its extra
machinery is not earning its keep.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from fairtrain.evaluation.metrics import classification_metrics

# lbfgs converges in ~70 iterations on the Adult training split (22,792 standardised/one-hot
# rows × 118 columns), past the default cap of 100 only on harder feature sets; 2000 leaves room,
# and a run that still hits the cap says so with a ConvergenceWarning.
LOGISTIC_MAX_ITER = 2000
# One OpenMP thread: on a 2-core machine shared with other work, gradient boosting's spinning
# OpenMP threads take ~25 s on Adult against ~3 s single-threaded (measured), and one thread
# also makes the fitted trees independent of the machine's core count.
BASELINE_THREADS = 1
THRESHOLD = 0.5  # baselines are compared at the default threshold, as the network is by default
REPORTED = ("roc_auc", "accuracy", "log_loss")


def baseline_models(seed: int) -> dict[str, ClassifierMixin]:
    """The unfitted baselines, name → estimator, deterministic for ``seed``.

    Use this to fit a baseline yourself (for its probabilities, say); ``fit_baselines`` fits
    exactly these.
    """
    return {
        # lbfgs is deterministic; random_state is set only so that the seed is visible.
        "logistic_regression": LogisticRegression(max_iter=LOGISTIC_MAX_ITER, random_state=seed),
        # Early stopping is on above 10,000 rows ("auto") and holds out 10% of the training
        # rows at random: random_state fixes that split, so a seed gives the same model.
        "hist_gradient_boosting": HistGradientBoostingClassifier(random_state=seed),
    }


def fit_baselines(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int
) -> dict:
    """Fit every baseline on the training split and score it on the test split.

    In: feature matrices (rows × features, e.g. ``Preprocessor.transform`` output) and 0/1
    labels (float32 from ``target_vector`` is fine). Out: name → ``{"roc_auc", "accuracy",
    "log_loss", "fit_seconds"}``, computed by ``metrics.classification_metrics`` at threshold 0.5
    so the figures compare directly with the network's. ``fit_seconds`` is wall-clock time and the
    only entry that varies between runs with the same seed.
    """
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise ValueError(
            f"features and labels differ in length: train {len(x_train)} vs {len(y_train)}, "
            f"test {len(x_test)} vs {len(y_test)}"
        )
    y_fit = np.asarray(y_train).astype(np.int64)
    y_eval = np.asarray(y_test).astype(np.int64)
    if len(np.unique(y_fit)) != 2:
        raise ValueError("y_train must hold both classes to fit a classifier")
    results = {}
    for name, model in baseline_models(seed).items():
        started = time.perf_counter()
        with threadpool_limits(limits=BASELINE_THREADS):
            model.fit(x_train, y_fit)
        fit_seconds = time.perf_counter() - started
        proba = model.predict_proba(x_test)[:, 1].astype(np.float64)
        scores = classification_metrics(y_eval, proba, THRESHOLD)
        results[name] = {**{key: scores[key] for key in REPORTED}, "fit_seconds": round(fit_seconds, 3)}
    return results
