"""Linear models (LogisticRegression, LinearRegression, Ridge, SGD, linear SVMs, ...) predicted
with one matrix product in numpy.

scikit-learn's `predict` validates its input on every call (namespaces, dataframe checks,
feature counts): about 400 µs on a busy 2-core machine where the product itself takes 10 µs, so
for a linear model nearly all of a served request's model time was validation of an array this
server had already built. Here `predict` is the arithmetic of scikit-learn's own
`decision_function` and `predict` (`X @ coef_.T + intercept_`, then the class by sign or
argmax), used only for scikit-learn's own linear estimators (a classifier that keeps its linear
`predict`, or one of the regressors named below), and checked at
load against scikit-learn's answers on probe rows; any difference, and the model keeps
scikit-learn's own predict. Other outputs (`predict_proba`) always go to scikit-learn."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# scikit-learn's regressors whose predict is `X @ coef_.T + intercept_` (each overrides predict,
# if only for its docstring, so they are named rather than told by their methods).
REGRESSORS = {"LinearRegression", "Ridge", "RidgeCV", "Lasso", "LassoCV", "ElasticNet",
              "ElasticNetCV", "SGDRegressor", "LinearSVR", "HuberRegressor"}


class Linear:
    outputs = ("predict",)

    def __init__(self, estimator: Any):
        coef = estimator.coef_
        self.coef_t = coef.T if coef.ndim == 2 else coef
        self.intercept = estimator.intercept_
        self.width = coef.shape[-1]
        self.classes = getattr(estimator, "classes_", None)

    @classmethod
    def create(cls, estimator: Any) -> Linear | None:
        """An evaluator of this estimator, or None where its predict is not scikit-learn's
        linear one (dense coefficients) or does not give scikit-learn's answers on probe rows."""
        from sklearn.linear_model._base import LinearClassifierMixin

        kind = type(estimator)
        regressor = kind.__name__ in REGRESSORS and kind.__module__.startswith("sklearn.")
        if not (regressor or _inherits(kind, LinearClassifierMixin, "predict",
                                       "decision_function")):
            return None
        if not isinstance(getattr(estimator, "coef_", None), np.ndarray):
            return None  # sparsified, or not fitted
        try:
            linear = cls(estimator)
            probe = np.random.default_rng(0).normal(size=(64, linear.width)) * 3
            for rows in (probe, probe.astype(np.float32)):
                if not np.array_equal(linear.predict(rows), estimator.predict(rows)):
                    raise ValueError("its answers differ from scikit-learn's")
        except Exception as exc:  # any surprise at all: scikit-learn's own predict answers
            log.warning("the linear model is predicted by scikit-learn itself (%s)", exc)
            return None
        log.info("linear model predicted with one matrix product")
        return linear

    def rows(self, features: Any) -> np.ndarray | None:
        """The features as the matrix scikit-learn would compute with (float32 or float64);
        None when scikit-learn's own predict must answer (text, missing or infinite values, a
        width it would refuse: its errors are its own)."""
        x = features.to_numpy() if hasattr(features, "to_numpy") else features
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != self.width:
            return None
        if x.dtype.kind not in "biuf":
            return None
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float64)
        return x if np.isfinite(x).all() else None

    def predict(self, rows: np.ndarray) -> np.ndarray:
        scores = rows @ self.coef_t + self.intercept
        if self.classes is None:
            return scores
        if scores.ndim > 1 and scores.shape[1] == 1:
            scores = scores.reshape(-1)
        indices = (scores > 0).astype(np.intp) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes.take(indices, axis=0)


def _inherits(kind: type, base: type, *methods: str) -> bool:
    """Whether `kind` is a `base` that keeps `base`'s own implementation of `methods`."""
    return issubclass(kind, base) and all(
        getattr(kind, method, None) is getattr(base, method) for method in methods)
