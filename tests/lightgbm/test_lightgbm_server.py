"""The LightGBM runtime over v1, v2 JSON, v2 binary (tritonclient HTTP) and gRPC (tritonclient
gRPC), against LightGBM's own predictions in this process on the same input.

One server serves a repository of every kind of model (one folder each); others serve the
example alone, a repository mixing LightGBM and XGBoost `.bst` files, and startup failures."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import requests
from sklearn.datasets import load_iris

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "lightgbm-iris"
ROWS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6], [5.1, 3.5, 1.4, 0.2], [7.7, 3.0, 6.1, 2.3]]
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def v1(server, model, body):
    return requests.post(f"{server.url}/v1/models/{model}:predict", json=body, timeout=10)


def v2(server, model, inputs, outputs=None):
    body = {"inputs": inputs}
    if outputs is not None:
        body["outputs"] = [{"name": n} for n in outputs]
    return requests.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=10)


def tensor(data, name="input-0", datatype="FP64"):
    array = np.asarray(data)
    return {"name": name, "datatype": datatype, "shape": list(array.shape),
            "data": array.reshape(-1).tolist()}


def outputs_of(reply) -> dict[str, np.ndarray]:
    assert reply.status_code == 200, reply.text
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in reply.json()["outputs"]}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> the booster LightGBM loads from the folder: one folder per model kind."""
    root = tmp_path_factory.mktemp("lgb-repository")
    iris_x, iris_y = load_iris(return_X_y=True)
    rng = np.random.default_rng(0)
    boosters = {}

    def save(name, booster, filename="model.bst"):
        (root / name).mkdir()
        booster.save_model(root / name / filename)
        boosters[name] = lgb.Booster(model_file=str(root / name / filename))

    # The example as committed: a multiclass classifier with named features, KServe's model.bst.
    (root / "iris").mkdir()
    shutil.copy(EXAMPLE / "model.bst", root / "iris" / "model.bst")
    boosters["iris"] = lgb.Booster(model_file=str(EXAMPLE / "model.bst"))

    params = {"verbose": -1, "num_threads": 1, "num_leaves": 4, "min_data_in_leaf": 5}
    # Fit on a plain array (features named Column_N by LightGBM), saved as model.txt.
    plain = lgb.train({**params, "objective": "multiclass", "num_class": 3},
                      lgb.Dataset(iris_x, iris_y), num_boost_round=5)
    save("iris_txt", plain, "model.txt")

    features = rng.normal(size=(300, 5))
    labels = (features[:, 0] + features[:, 1] > 0).astype(int)
    save("binary", lgb.train({**params, "objective": "binary"}, lgb.Dataset(features, labels),
                             num_boost_round=6))
    save("regressor", lgb.train({**params, "objective": "regression"},
                                lgb.Dataset(pd.DataFrame(iris_x, columns=FEATURES), iris_y),
                                num_boost_round=5))

    # pandas categories (stored in the model, re-coded by value) and integer-coded categories.
    colors = rng.choice(["red", "green", "blue"], size=300)
    shelf = rng.integers(0, 4, size=300)
    sizes = rng.normal(size=300)
    frame = pd.DataFrame({"color": pd.Categorical(colors), "shelf": shelf, "size": sizes})
    target = (colors == "red") * 2.0 + (shelf == 2) + sizes
    save("categorical", lgb.train({**params, "objective": "regression"},
                                  lgb.Dataset(frame, target, categorical_feature=["color",
                                                                                  "shelf"]),
                                  num_boost_round=8))
    return root, boosters


@pytest.fixture(scope="module")
def server(launch, models):
    return launch("-m", "lgbserver", "--model_dir", str(models[0]))


def test_every_model_loads_with_real_metadata(server):
    def meta(name):
        return requests.get(f"{server.url}/v2/models/{name}", timeout=10).json()

    iris = meta("iris")
    assert iris["platform"] == "lightgbm"
    assert iris["inputs"] == [{"name": n, "datatype": "FP64", "shape": [-1]} for n in FEATURES]
    assert iris["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1, 3]},
                               {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
                               {"name": "label", "datatype": "INT64", "shape": [-1]}]
    assert meta("iris_txt")["inputs"] == [{"name": "input-0", "datatype": "FP64",
                                           "shape": [-1, 4]}]
    assert meta("binary")["outputs"][1] == {"name": "predict_proba", "datatype": "FP64",
                                            "shape": [-1, 2]}
    assert meta("regressor")["outputs"] == [{"name": "predict", "datatype": "FP64",
                                             "shape": [-1]}]
    assert meta("categorical")["inputs"] == [
        {"name": "color", "datatype": "BYTES", "shape": [-1]},
        {"name": "shelf", "datatype": "INT64", "shape": [-1]},
        {"name": "size", "datatype": "FP64", "shape": [-1]}]
    config = requests.get(f"{server.url}/v2/models/iris/config", timeout=10).json()
    assert config["max_batch_size"] == 256 and "dynamic_batching" in config


@pytest.mark.parametrize("name", ["iris", "iris_txt", "binary", "regressor"])
def test_v1_and_v2_json_equal_lightgbm(server, models, name):
    booster = models[1][name]
    rows = np.random.default_rng(1).uniform(0, 8, size=(6, booster.num_feature()))
    expected = booster.predict(rows)
    np.testing.assert_allclose(outputs_of(v2(server, name, [tensor(rows)]))["predict"],
                               expected, rtol=1e-12)
    np.testing.assert_allclose(v1(server, name, {"instances": rows.tolist()}).json()
                               ["predictions"], expected, rtol=1e-12)


def test_classifier_outputs_are_lgbmclassifiers(server, models):
    booster = models[1]["iris"]
    out = outputs_of(v2(server, "iris", [tensor(ROWS)], ["predict_proba", "label"]))
    np.testing.assert_allclose(out["predict_proba"], booster.predict(np.array(ROWS)),
                               rtol=1e-12)
    assert out["label"].tolist() == np.argmax(booster.predict(np.array(ROWS)), 1).tolist()
    binary = models[1]["binary"]
    rows = np.random.default_rng(2).normal(size=(5, 5))
    p = binary.predict(rows)
    out = outputs_of(v2(server, "binary", [tensor(rows)], ["predict_proba", "label"]))
    np.testing.assert_allclose(out["predict_proba"], np.stack([1 - p, p], axis=1), rtol=1e-12)
    assert out["label"].tolist() == (p > 0.5).astype(int).tolist()
    regressor = v2(server, "regressor", [tensor(ROWS)], ["predict_proba"])
    assert regressor.status_code == 400
    assert regressor.json()["error"] == "model 'regressor' has no output 'predict_proba'; it " \
                                        "has predict"


def test_named_features_by_column_v1_objects_or_matrix(server, models):
    booster = models[1]["iris"]
    frame = pd.DataFrame(ROWS, columns=FEATURES)
    expected = booster.predict(frame)
    columns = [tensor(frame[c].to_numpy(), name=c) for c in reversed(FEATURES)]
    np.testing.assert_allclose(outputs_of(v2(server, "iris", columns))["predict"], expected,
                               rtol=1e-12)
    objects = v1(server, "iris", {"instances": frame.to_dict(orient="records")})
    np.testing.assert_allclose(objects.json()["predictions"], expected, rtol=1e-12)
    missing = v2(server, "iris", columns[:2])
    assert missing.status_code == 400
    assert "missing sepal_length, sepal_width" in missing.json()["error"]


def test_categorical_features_by_name(server, models):
    booster = models[1]["categorical"]
    colors, shelves, sizes = ["red", "blue", "green", "red"], [2, 0, 3, 1], [0.5, -1.0, 0.0, 2.0]
    expected = booster.predict(pd.DataFrame({"color": pd.Categorical(colors),
                                             "shelf": shelves, "size": sizes}))
    inputs = [{"name": "color", "datatype": "BYTES", "shape": [4], "data": colors},
              tensor(shelves, name="shelf", datatype="INT64"), tensor(sizes, name="size")]
    np.testing.assert_allclose(outputs_of(v2(server, "categorical", inputs))["predict"],
                               expected, rtol=1e-12)
    rows = [{"color": c, "shelf": s, "size": z} for c, s, z in zip(colors, shelves, sizes)]
    np.testing.assert_allclose(v1(server, "categorical", {"instances": rows}).json()
                               ["predictions"], expected, rtol=1e-12)
    matrix = v2(server, "categorical", [tensor([[1.0, 2.0, 3.0]])])
    assert matrix.status_code == 400 and "categorical features" in matrix.json()["error"]


def test_binary_tensors_and_grpc_with_tritonclient(server, models):
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http

    booster = models[1]["iris"]
    rows = np.random.default_rng(4).uniform(0, 8, size=(7, 4))
    expected = booster.predict(rows)
    for client, module in ((triton_http.InferenceServerClient(server.url[7:]), triton_http),
                           (triton_grpc.InferenceServerClient(server.grpc_target), triton_grpc)):
        # FP64 and FP32 matrices, and one FP64 column per feature, all as raw bytes.
        for array in (rows, rows.astype(np.float32)):
            item = module.InferInput("input-0", list(array.shape),
                                     "FP64" if array.dtype == np.float64 else "FP32")
            item.set_data_from_numpy(array)
            got = client.infer("iris", [item]).as_numpy("predict")
            np.testing.assert_allclose(got, booster.predict(array), rtol=1e-12)
        columns = []
        for i, name in enumerate(FEATURES):
            item = module.InferInput(name, [len(rows)], "FP64")
            item.set_data_from_numpy(np.ascontiguousarray(rows[:, i]))
            columns.append(item)
        wanted = [module.InferRequestedOutput("predict_proba")]
        got = client.infer("iris", columns, outputs=wanted).as_numpy("predict_proba")
        np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("body,message", [
    ({"instances": [[1, 2, 3]]}, "model 'iris_txt' expects 4 features per row, got 3"),
    ({"instances": [1, 2, 3, 4]}, "expects a 2-D [rows, 4] input, got shape [4]"),
    ({"instances": [["a", "b", "c", "d"]]}, "must be numbers"),
    ({"rows": ROWS}, "a v1 request needs 'instances' or 'inputs'"),
])
def test_bad_input_is_400(server, body, message):
    reply = v1(server, "iris_txt", body)
    assert reply.status_code == 400 and message in reply.json()["error"], reply.text


def test_concurrent_requests_are_batched_and_answered_each_correctly(server, models):
    booster = models[1]["iris"]
    rng = np.random.default_rng(3)
    batches = [rng.uniform(0, 8, size=(int(n), 4)) for n in rng.integers(1, 30, size=40)]

    def ask(rows):
        return outputs_of(v2(server, "iris", [tensor(rows)], ["predict", "label"]))

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, batches))
    for rows, out in zip(batches, answers):
        np.testing.assert_allclose(out["predict"], booster.predict(rows), rtol=1e-12)
    stats = requests.get(f"{server.url}/v2/models/iris/stats", timeout=10).json()
    model = stats["model_stats"][0]
    assert model["execution_count"] < model["inference_stats"]["success"]["count"]


def test_example_serves_alone_with_predict_proba_and_nthread(launch):
    server = launch("-m", "lgbserver", "--model_name", "iris", "--model_dir", str(EXAMPLE),
                    "--nthread", "1", env={"PREDICT_PROBA": "true"})
    booster = lgb.Booster(model_file=str(EXAMPLE / "model.bst"))
    reply = v1(server, "iris", {"instances": ROWS})
    np.testing.assert_allclose(reply.json()["predictions"], booster.predict(np.array(ROWS)),
                               rtol=1e-12)
    assert "nthread=1" in server.output()
    assert "ignoring unknown arguments" not in server.output()


def test_a_repository_tells_lightgbm_bst_from_xgboost_bst(launch, tmp_path):
    """KServe names both frameworks' models model.bst: each folder goes to its own runtime."""
    shutil.copytree(EXAMPLE, tmp_path / "lgb", ignore=shutil.ignore_patterns("*.py"))
    xgb_folder = tmp_path / "xgb"
    xgb_folder.mkdir()
    shutil.copy(REPO / "examples" / "xgboost-iris" / "model.json", xgb_folder / "model.bst")
    server = launch("-m", "modelserver", "--model_dir", str(tmp_path))
    platforms = {name: requests.get(f"{server.url}/v2/models/{name}", timeout=10)
                 .json()["platform"] for name in ("lgb", "xgb")}
    assert platforms == {"lgb": "lightgbm", "xgb": "xgboost"}


@pytest.mark.parametrize("setup,message", [
    (lambda d: None, "no LightGBM model in"),
    (lambda d: (d / "README.md").write_text("hi"), "found README.md"),
    (lambda d: [shutil.copy(EXAMPLE / "model.bst", d / n) for n in ("a.bst", "b.txt")],
     "several model files in"),
    (lambda d: (d / "model.json").write_text(json.dumps(lgb.Booster(
        model_file=str(EXAMPLE / "model.bst")).dump_model())),
     "is a JSON dump of a LightGBM model (Booster.dump_model), which LightGBM cannot load"),
    (lambda d: (d / "model.bst").write_text("tree\nversion=v4\nnum_class=x\n"),
     "cannot load"),
], ids=["empty", "no-model-file", "two-models", "json-dump", "corrupt"])
def test_startup_errors_are_clean(launch, tmp_path, setup, message):
    setup(tmp_path)
    server = launch("-m", "lgbserver", "--model_dir", str(tmp_path), wait=False)
    assert server.wait_exit() == 1
    output = server.output()
    assert message in output and tmp_path.name in output, output
    assert "Traceback" not in output


def test_mlserver_pd_request_to_a_plain_array_model(server, models):
    """MLServer's `pd` content type: one input per column, named as the client's DataFrame,
    for a model fit on a plain array: the columns are taken in order."""
    booster = models[1]["iris_txt"]
    columns = [{**tensor(np.array(ROWS)[:, [i]], name=f"column {i}"),
                "parameters": {"content_type": "np"}} for i in range(4)]
    reply = requests.post(f"{server.url}/v2/models/iris_txt/infer", timeout=10,
                          json={"inputs": columns, "parameters": {"content_type": "pd"}})
    out = reply.json()["outputs"][0]
    np.testing.assert_allclose(np.reshape(out["data"], out["shape"]),
                               booster.predict(np.array(ROWS)), rtol=1e-12)
    assert out["parameters"] == {"content_type": "np"}


def test_binary_tensors_at_every_offset(server):
    """Every model, every numeric datatype, binary behind JSON headers of 8 lengths: each answer
    is the plain JSON one (a misaligned matrix reaches LightGBM as an aligned copy)."""
    from binary_offsets import check_every_offset

    statuses = check_every_offset(server.url)
    assert statuses[("iris", "FP64")] == statuses[("categorical", "FP32")] == "200"
