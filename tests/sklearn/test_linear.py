"""Linear models predicted with one matrix product give scikit-learn's own answers, bit for bit;
estimators whose predict is not scikit-learn's linear one, and inputs only scikit-learn handles
(missing values, text, a wrong width), still go to scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests
from sklearn.datasets import load_iris, make_classification, make_regression
from sklearn.linear_model import (
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Perceptron,
    Ridge,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC, LinearSVR

from sklearnserver.linear import Linear

CLASSIFIERS = [LogisticRegression, SGDClassifier, LinearSVC, Perceptron]
REGRESSORS = [LinearRegression, Ridge, Lasso, ElasticNet, SGDRegressor, LinearSVR]


def probe(x: np.ndarray) -> list[np.ndarray]:
    """The training rows and far-off ones, as float64, float32 and integers."""
    rows = np.vstack([x, np.random.default_rng(1).normal(size=(200, x.shape[1])) * 5])
    return [rows, rows.astype(np.float32), np.rint(rows).astype(np.int64)]


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("kind", CLASSIFIERS)
def test_classifiers_answer_as_scikit_learn(kind, classes):
    x, y = make_classification(300, 8, n_classes=classes, n_informative=5, random_state=0)
    labels = np.array(["ash", "birch", "cedar"])[y]  # labels of any type
    estimator = kind(random_state=0).fit(x, labels)
    linear = Linear.create(estimator)
    assert linear is not None
    for rows in probe(x):
        assert np.array_equal(linear.predict(linear.rows(rows)), estimator.predict(rows))


@pytest.mark.parametrize("kind,targets", [(k, 1) for k in REGRESSORS] + [
    (k, 2) for k in REGRESSORS if k not in (SGDRegressor, LinearSVR)])  # those: one target
def test_regressors_answer_as_scikit_learn(kind, targets):
    x, y = make_regression(300, 8, n_targets=targets, random_state=0)
    estimator = kind().fit(x, y)
    linear = Linear.create(estimator)
    assert linear is not None
    for rows in probe(x):
        assert np.array_equal(linear.predict(linear.rows(rows)), estimator.predict(rows))


def test_what_scikit_learn_must_see_itself():
    x, y = load_iris(return_X_y=True)
    estimator = LogisticRegression(max_iter=500).fit(x, y)
    linear = Linear.create(estimator)
    with_nan = x[:3].copy()
    with_nan[1, 2] = np.nan
    assert linear.rows(with_nan) is None  # scikit-learn refuses it with its own message
    assert linear.rows(x[:, :3]) is None  # so does a wrong width
    assert linear.rows(np.array([["a"] * 4], dtype=object)) is None
    assert linear.outputs == ("predict",)  # probabilities: scikit-learn's own


def test_other_estimators_keep_their_own_predict():
    x, y = load_iris(return_X_y=True)
    assert Linear.create(make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)) is None
    sparse = LogisticRegression(max_iter=500).fit(x, y).sparsify()
    assert Linear.create(sparse) is None

    class Shifted(LinearRegression):
        def predict(self, X):
            return super().predict(X) + 1

    assert Linear.create(Shifted().fit(x, y)) is None


def test_a_served_linear_model_answers_as_scikit_learn(launch, tmp_path):
    import joblib

    x, y = load_iris(return_X_y=True)
    estimator = LogisticRegression(max_iter=500).fit(x, y)
    joblib.dump(estimator, tmp_path / "model.joblib")
    server = launch("-m", "sklearnserver", "--model_name", "lr", "--model_dir", str(tmp_path))
    assert "linear model predicted with one matrix product" in server.output()
    body = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [50, 4],
                        "data": x[::3].ravel().tolist()}],
            "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}
    reply = requests.post(server.url + "/v2/models/lr/infer", json=body, timeout=10).json()
    outputs = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in reply["outputs"]}
    rows = x[::3].astype(np.float32)
    assert np.array_equal(outputs["predict"], estimator.predict(rows))
    assert np.allclose(outputs["predict_proba"], estimator.predict_proba(rows))
    # A missing value (NaN, which only binary tensors carry) is scikit-learn's 400, as before.
    header = json.dumps({"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4],
                                     "parameters": {"binary_data_size": 32}}]}).encode()
    reply = requests.post(server.url + "/v2/models/lr/infer",
                          data=header + np.array([np.nan, 1, 2, 3]).tobytes(),
                          headers={"Inference-Header-Content-Length": str(len(header))},
                          timeout=10)
    assert reply.status_code == 400 and "NaN" in reply.json()["error"], reply.text
    wrong = requests.post(server.url + "/v1/models/lr:predict",
                          json={"instances": [[1.0, 2.0, 3.0]]}, timeout=10)
    assert wrong.status_code == 400 and "4 features" in wrong.json()["error"], wrong.text
