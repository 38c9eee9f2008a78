"""The XGBoost runtime's parts in-process: the direct C-API prediction against inplace_predict,
finding the model file, thread count and XGBoost's error text."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from sklearn.datasets import load_iris

from xgbserver import XGBoostModel
from xgbserver.fastpredict import DensePredictor
from xgbserver.model import clean_message, find_booster, saved_version

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "xgboost-iris"


@pytest.fixture(scope="module")
def boosters():
    x, y = load_iris(return_X_y=True)
    rng = np.random.default_rng(0)
    binary_x = rng.normal(size=(100, 6))
    return {
        "softprob": xgb.XGBClassifier(n_estimators=4, max_depth=3, n_jobs=1)
        .fit(x, y).get_booster(),
        "binary": xgb.train({"objective": "binary:logistic", "nthread": 1},
                            xgb.DMatrix(binary_x, label=binary_x[:, 0] > 0), 5),
        "regression": xgb.train({"objective": "reg:squarederror", "nthread": 1},
                                xgb.DMatrix(x, label=y), 5),
        "multitarget": xgb.XGBRegressor(n_estimators=3, n_jobs=1)
        .fit(x, np.stack([y, -y], 1)).get_booster(),
    }


@pytest.mark.parametrize("kind", ["softprob", "binary", "regression", "multitarget"])
@pytest.mark.parametrize("dtype", ["float64", "float32", "int64", "uint8", "bool", "float16"])
def test_direct_prediction_equals_inplace_predict(boosters, kind, dtype):
    booster = boosters[kind]
    width = booster.num_features()
    predictor = DensePredictor.create(booster, width)
    assert predictor is not None
    rng = np.random.default_rng(1)
    for rows in (1, 7, 300):
        data = (rng.uniform(0, 6, size=(rows, width))).astype(dtype)
        if data.dtype.kind == "f":
            data[0, -1] = np.nan  # missing value
        for margin in (False, True):
            ours = predictor.predict(data, margin)
            theirs = booster.inplace_predict(
                data.astype(np.float32) if dtype in ("bool", "float16") else data,
                predict_type="margin" if margin else "value")
            assert ours.dtype == np.float32 and ours.shape == theirs.shape
            np.testing.assert_array_equal(ours, theirs)


def test_direct_prediction_takes_non_contiguous_input(boosters):
    booster = boosters["softprob"]
    predictor = DensePredictor.create(booster, 4)
    wide = np.random.default_rng(2).uniform(0, 6, size=(10, 8))
    view = wide[:, ::2]
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(predictor.predict(view), booster.inplace_predict(view))


def test_direct_prediction_is_refused_when_it_would_differ(boosters, monkeypatch, caplog):
    monkeypatch.setattr(DensePredictor, "predict", lambda self, data, margin=False:
                        np.zeros((data.shape[0], 3), np.float32))
    assert DensePredictor.create(boosters["softprob"], 4) is None
    assert "using inplace_predict" in caplog.text


def test_model_falls_back_to_inplace_predict(tmp_path, monkeypatch):
    shutil.copy(EXAMPLE / "model.json", tmp_path)
    monkeypatch.setattr(DensePredictor, "create", classmethod(lambda cls, b, n: None))
    model = XGBoostModel("m", str(tmp_path))
    model.load()
    assert model.fast is None
    from modelserver import InferRequest, Tensor

    rows = np.array([[6.8, 2.8, 4.8, 1.4]])
    out = model.predict(InferRequest([Tensor.from_numpy("x", rows)]))["predict"]
    np.testing.assert_array_equal(out, model.booster.inplace_predict(rows))


def test_find_booster_picks_the_booster_among_other_json(tmp_path):
    shutil.copy(EXAMPLE / "model.json", tmp_path / "model.json")
    (tmp_path / "feature_names.json").write_text(json.dumps(["a", "b"]))
    (tmp_path / "settings.json").write_text("{}")
    assert find_booster(tmp_path) == tmp_path / "model.json"
    shutil.copy(EXAMPLE / "model.json", tmp_path / "other.json")
    with pytest.raises(ValueError, match="several model files in .*: model.json, other.json"):
        find_booster(tmp_path)


def test_find_booster_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_booster(tmp_path / "nope")
    (tmp_path / "weights.txt").write_text("")
    with pytest.raises(FileNotFoundError, match=f"no XGBoost model in {tmp_path}: .*found "
                                                "weights.txt"):
        find_booster(tmp_path)


def test_can_load_tells_xgboost_folders_from_others(tmp_path):
    booster_dir, hf_dir, mlflow_dir = (tmp_path / n for n in ("xgb", "hf", "mlflow"))
    for folder in (booster_dir, hf_dir, mlflow_dir):
        folder.mkdir()
    shutil.copy(EXAMPLE / "model.json", booster_dir)
    (hf_dir / "config.json").write_text(json.dumps({"model_type": "bert"}))
    shutil.copy(EXAMPLE / "model.json", mlflow_dir)
    (mlflow_dir / "MLmodel").write_text("flavors: {}\n")
    assert XGBoostModel.can_load(booster_dir)
    assert not XGBoostModel.can_load(hf_dir)
    assert not XGBoostModel.can_load(mlflow_dir)


@pytest.mark.parametrize("settings,threads", [
    ({"threads": 2}, 2),  # the worker's share of the CPUs, as the core sized it
    ({"threads": 2, "parameters": {"nthread": 3}}, 3),  # --nthread, or settings.json
    ({"threads": 2, "parameters": {"nthread": 0}}, 2),  # 0: the worker's share
])
def test_nthread_comes_from_the_settings(settings, threads):
    from modelserver.settings import resolve

    model = XGBoostModel("m", str(EXAMPLE))
    model.settings = resolve((settings, "test"))
    model.load()
    assert model.nthread == threads
    assert json.loads(model.booster.save_config())["learner"]["generic_param"]["nthread"] == \
        str(threads)


def test_clean_message_drops_the_stack_trace():
    raw = ("[16:48:26] /workspace/include/xgboost/json.h:88: Invalid cast, from Integer to "
           "Object\nStack trace:\n  [bt] (0) /lib/libxgboost.so(+0x11031e) [0x7fe]\n")
    assert clean_message(raw) == "Invalid cast, from Integer to Object"


def test_zero_rows_answer_empty_outputs_shaped_as_the_metadata():
    from modelserver import InferRequest, RequestedOutput, Tensor

    model = XGBoostModel("m", str(EXAMPLE))
    model.load()
    names = ["predict", "predict_proba", "label"]
    out = model.predict(InferRequest([Tensor.from_numpy("x", np.zeros((0, 4)))],
                                     outputs=[RequestedOutput(n) for n in names]))
    assert {k: v.shape for k, v in out.items()} == {"predict": (0, 3), "predict_proba": (0, 3),
                                                    "label": (0,)}


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("model.json", b"", "the file is empty"),
        ("model.json", b"not json at all", "cannot load"),
        ("model.ubj", b"{L\x00\x00", "cannot load"),
        ("model.bst", (Path(__file__).parent / "data" / "legacy-binary.bst").read_bytes(),
         "legacy binary format"),
    ],
)
def test_load_errors_say_what_is_wrong(tmp_path, name, content, message):
    from xgbserver.model import load_booster

    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError) as caught:
        load_booster(tmp_path / name)
    text = str(caught.value)
    assert message in text and str(tmp_path / name) in text
    assert "Stack trace" not in text and "[bt]" not in text
    if message == "cannot load":
        assert "legacy" not in text


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_saved_version_is_read_from_json_and_ubjson(tmp_path, suffix):
    booster = xgb.train({}, xgb.DMatrix(np.arange(12.0).reshape(4, 3), label=[0, 1, 0, 1]), 2)
    booster.save_model(tmp_path / f"model{suffix}")
    assert saved_version(tmp_path / f"model{suffix}") == xgb.__version__.split("+")[0]
    (tmp_path / "other.json").write_text('{"learner": {}}')
    assert saved_version(tmp_path / "other.json") is None
