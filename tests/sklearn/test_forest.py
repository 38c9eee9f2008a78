"""Forests evaluated as a whole give scikit-learn's own answers, bit for bit; what only
scikit-learn handles (missing values, text) still goes to it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests
from sklearn.datasets import load_iris, make_classification, make_regression
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression

from sklearnserver.forest import Forest


def fitted(kind, **options):
    if kind in (RandomForestRegressor, ExtraTreesRegressor):
        x, y = make_regression(400, 12, random_state=0)
    else:
        x, y = make_classification(400, 12, n_classes=3, n_informative=6, random_state=0)
    return kind(random_state=0, **options).fit(x, y), x


@pytest.mark.parametrize("kind", [RandomForestClassifier, RandomForestRegressor,
                                  ExtraTreesClassifier, ExtraTreesRegressor])
def test_the_same_answers_as_scikit_learn(kind):
    estimator, x = fitted(kind, n_estimators=40)
    forest = Forest.create(estimator)
    assert forest is not None
    probe = np.vstack([x, np.random.default_rng(1).normal(size=(200, 12)) * 5])
    rows = forest.rows(probe)
    assert np.array_equal(forest.predict(rows), estimator.predict(probe))
    if hasattr(estimator, "predict_proba"):
        assert np.array_equal(forest.predict_proba(rows), estimator.predict_proba(probe))


def test_labels_of_any_type():
    x, y = load_iris(return_X_y=True)
    estimator = RandomForestClassifier(n_estimators=10, random_state=0).fit(
        x, np.array(["setosa", "versicolor", "virginica"])[y])
    forest = Forest.create(estimator)
    assert list(forest.predict(forest.rows(x))) == list(estimator.predict(x))


def test_what_scikit_learn_must_see_itself():
    estimator, x = fitted(RandomForestClassifier, n_estimators=5)
    forest = Forest.create(estimator)
    with_nan = x[:3].copy()
    with_nan[1, 2] = np.nan
    assert forest.rows(with_nan) is None  # missing values follow scikit-learn's own routing
    assert forest.rows(np.full((1, 12), 1e39)) is None  # past float32: scikit-learn's error
    assert forest.rows(np.array([["a"] * 12], dtype=object)) is None
    assert Forest.create(LogisticRegression().fit(x, fitted(RandomForestClassifier)[0]
                                                  .predict(x))) is None
    multi = RandomForestRegressor(n_estimators=3).fit(x, np.c_[x[:, 0], x[:, 1]])
    assert Forest.create(multi) is None


def test_a_served_forest_answers_as_scikit_learn(launch, tmp_path):
    import joblib

    x, y = load_iris(return_X_y=True)
    estimator = RandomForestClassifier(n_estimators=100, random_state=0).fit(x, y)
    joblib.dump(estimator, tmp_path / "model.joblib")
    server = launch("-m", "sklearnserver", "--model_name", "rf", "--model_dir", str(tmp_path))
    assert "100 trees of depth up to" in server.output()
    rows = np.vstack([x[::7], [[np.nan, 3.0, 1.4, 0.2]]])
    body = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": list(rows.shape),
                        "data": np.nan_to_num(rows, nan=0).ravel().tolist()}],
            "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}
    reply = requests.post(server.url + "/v2/models/rf/infer", json=body, timeout=10).json()
    outputs = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in reply["outputs"]}
    plain = np.nan_to_num(rows, nan=0)
    assert np.array_equal(outputs["predict"], estimator.predict(plain))
    assert np.array_equal(outputs["predict_proba"], estimator.predict_proba(plain))
    # A missing value (NaN, which only binary tensors carry) follows scikit-learn's routing.
    header = json.dumps({"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [4, 4],
                                     "parameters": {"binary_data_size": 128}}]}).encode()
    missing = np.where(np.eye(4, dtype=bool), np.nan, x[100:104])
    reply = requests.post(server.url + "/v2/models/rf/infer", data=header + missing.tobytes(),
                          headers={"Inference-Header-Content-Length": str(len(header))},
                          timeout=10)
    assert reply.json()["outputs"][0]["data"] == estimator.predict(missing).tolist()
