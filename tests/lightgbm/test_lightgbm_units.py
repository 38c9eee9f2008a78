"""LightGBM's direct C prediction against Booster.predict, in process."""

from __future__ import annotations

import logging
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from lgbserver import LightGBMModel
from lgbserver.fastpredict import MatrixPredictor
from modelserver import InferRequest, Tensor

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lightgbm-iris"


@pytest.fixture(scope="module")
def boosters():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    params = {"verbose": -1, "num_threads": 1, "num_leaves": 4, "min_data_in_leaf": 5}
    return {
        "multiclass": lgb.Booster(model_file=str(EXAMPLE / "model.bst")),
        "binary": lgb.train({**params, "objective": "binary"},
                            lgb.Dataset(x, (x[:, 0] > 0).astype(int)), 5),
        "regression": lgb.train({**params, "objective": "regression"},
                                lgb.Dataset(x, x.sum(axis=1)), 5),
    }


@pytest.mark.parametrize("kind", ["multiclass", "binary", "regression"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_direct_prediction_equals_booster_predict(boosters, kind, dtype):
    booster = boosters[kind]
    width = booster.num_model_per_iteration()
    predictor = MatrixPredictor.create(booster, width)
    assert predictor is not None
    rows = np.random.default_rng(1).uniform(-3, 8, size=(9, booster.num_feature())).astype(dtype)
    for threads in (1, 2):
        np.testing.assert_array_equal(predictor.predict(rows, threads), booster.predict(rows))
    columns = np.asfortranarray(rows)  # not C-contiguous: copied
    np.testing.assert_array_equal(predictor.predict(columns, 1), booster.predict(rows))


def test_direct_prediction_is_refused_when_it_would_differ(boosters, caplog):
    with caplog.at_level(logging.WARNING):
        assert MatrixPredictor.create(boosters["multiclass"], 1) is None  # a wrong width
    assert "using Booster.predict" in caplog.text


def test_model_uses_one_thread_for_small_batches_and_answers_as_booster_predict(boosters):
    model = LightGBMModel("iris", str(EXAMPLE))
    model.load()
    assert model.fast is not None
    rows = np.random.default_rng(2).uniform(0, 8, size=(600, 4))
    request = InferRequest([Tensor.from_numpy("input-0", rows)])
    np.testing.assert_array_equal(model.predict(request)["predict"],
                                  boosters["multiclass"].predict(rows))
