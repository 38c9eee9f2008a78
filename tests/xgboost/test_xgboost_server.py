"""The XGBoost runtime over v1 and v2 REST, against XGBoost called directly on the same input.

One server serves a repository of every kind of model (one folder each); a second serves the
example folder as a single model; the rest are startup failures."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import tritonclient.http as httpclient
import xgboost as xgb
from sklearn.datasets import load_iris

from binary_offsets import check_every_offset

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "xgboost-iris"
DATA = Path(__file__).with_name("data")
ROWS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6], [5.1, 3.5, 1.4, 0.2], [7.7, 3.0, 6.1, 2.3]]
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def v1(server, model, body):
    return requests.post(f"{server.url}/v1/models/{model}:predict", json=body, timeout=10)


def v2(server, model, inputs, outputs=None, **extra):
    body = {"inputs": inputs, **extra}
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


def booster_predict(booster, rows, **kwargs):
    """What KServe's xgbserver returns: Booster.predict on a DMatrix."""
    return booster.predict(xgb.DMatrix(np.asarray(rows, dtype=np.float32)), **kwargs)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (estimator or booster, folder): one folder per model kind."""
    root = tmp_path_factory.mktemp("xgb-repository")
    iris_x, iris_y = load_iris(return_X_y=True)
    rng = np.random.default_rng(0)
    made = {}

    def folder(name):
        path = root / name
        path.mkdir()
        return path

    # The example as committed: XGBClassifier, JSON.
    shutil.copy(EXAMPLE / "model.json", folder("iris_json") / "model.json")
    clf = xgb.XGBClassifier()
    clf.load_model(EXAMPLE / "model.json")
    made["iris_json"] = clf

    # The same kind saved as UBJSON.
    ubj = xgb.XGBClassifier(n_estimators=5, max_depth=3, n_jobs=1).fit(iris_x, iris_y)
    ubj.save_model(folder("iris_ubj") / "model.ubj")
    made["iris_ubj"] = ubj

    # Binary classifier, saved under the old KServe name model.bst (the content is UBJSON).
    features = rng.normal(size=(200, 5))
    labels = (features[:, 0] + features[:, 1] > 0).astype(int)
    binary = xgb.XGBClassifier(n_estimators=6, max_depth=2, n_jobs=1).fit(features, labels)
    (folder("binary") / "model.bst").write_bytes(binary.get_booster().save_raw("ubj"))
    made["binary"] = binary

    # A plain Booster from xgb.train with multi:softmax (predictions are class indices).
    softmax = xgb.train({"objective": "multi:softmax", "num_class": 3, "max_depth": 2,
                         "nthread": 1}, xgb.DMatrix(iris_x, label=iris_y), num_boost_round=4)
    softmax.save_model(folder("softmax") / "model.json")
    made["softmax"] = softmax

    # A regressor fit on a DataFrame: named features. A non-model JSON file sits beside it.
    frame = pd.DataFrame(iris_x, columns=FEATURES)
    regressor = xgb.XGBRegressor(n_estimators=5, max_depth=3, n_jobs=1).fit(frame, iris_y)
    named = folder("regressor")
    regressor.save_model(named / "model.json")
    (named / "feature_notes.json").write_text(json.dumps({"units": "cm"}))
    made["regressor"] = regressor

    # Two targets at once.
    targets = np.stack([iris_x[:, 0] * 2, iris_x[:, 1] - iris_x[:, 2]], axis=1)
    multi = xgb.XGBRegressor(n_estimators=4, max_depth=2, n_jobs=1).fit(iris_x, targets)
    multi.save_model(folder("multitarget") / "model.ubj")
    made["multitarget"] = multi

    # Categorical feature (categories stored in the model, re-coded by value at prediction).
    colors = rng.choice(["red", "green", "blue"], size=300)
    sizes = rng.normal(size=300)
    cat_frame = pd.DataFrame({"color": pd.Categorical(colors), "size": sizes})
    cat_y = (colors == "red") * 2.0 + sizes
    categorical = xgb.XGBRegressor(n_estimators=5, max_depth=3, enable_categorical=True,
                                   tree_method="hist", n_jobs=1).fit(cat_frame, cat_y)
    categorical.save_model(folder("categorical") / "model.json")
    made["categorical"] = categorical

    return root, made


@pytest.fixture(scope="module")
def server(launch, models):
    root, _ = models
    return launch("-m", "xgbserver", "--model_dir", str(root))


def test_every_format_loads(server, models):
    index = requests.post(server.url + "/v2/repository/index", timeout=10).json()
    assert {m["name"]: m["state"] for m in index} == {name: "READY" for name in models[1]}


@pytest.mark.parametrize("model", ["iris_json", "iris_ubj"])
def test_classifier_v2_matches_xgboost(server, models, model):
    clf = models[1][model]
    reply = v2(server, model, [tensor(ROWS)], ["predict", "predict_proba", "label"])
    out = outputs_of(reply)
    np.testing.assert_allclose(out["predict"], booster_predict(clf.get_booster(), ROWS),
                               rtol=1e-6)
    np.testing.assert_allclose(out["predict_proba"], clf.predict_proba(np.array(ROWS)),
                               rtol=1e-6)
    assert out["label"].tolist() == clf.predict(np.array(ROWS)).tolist()
    datatypes = {o["name"]: o["datatype"] for o in reply.json()["outputs"]}
    assert datatypes == {"predict": "FP32", "predict_proba": "FP32", "label": "INT64"}


def test_v2_default_output_is_predict_and_fp32_input_works(server, models):
    reply = v2(server, "iris_json", [tensor(ROWS, datatype="FP32")])
    out = outputs_of(reply)
    assert list(out) == ["predict"]
    np.testing.assert_allclose(out["predict"],
                               booster_predict(models[1]["iris_json"].get_booster(), ROWS),
                               rtol=1e-6)


def test_v1_returns_booster_predictions_like_kserve(server, models):
    reply = v1(server, "iris_ubj", {"instances": ROWS})
    assert reply.status_code == 200
    expected = booster_predict(models[1]["iris_ubj"].get_booster(), ROWS)
    np.testing.assert_allclose(reply.json()["predictions"], expected, rtol=1e-6)
    inputs_form = v1(server, "iris_ubj", {"inputs": ROWS}).json()["predictions"]
    np.testing.assert_allclose(inputs_form, expected, rtol=1e-6)


def test_binary_classifier_probabilities_have_two_columns(server, models):
    clf = models[1]["binary"]
    rows = np.random.default_rng(1).normal(size=(200, 5))
    out = outputs_of(v2(server, "binary", [tensor(rows)], ["predict", "predict_proba", "label"]))
    assert out["predict"].shape == (200,)
    assert ((out["predict"] > 0.3) & (out["predict"] < 0.7)).any()  # labels near the threshold
    np.testing.assert_allclose(out["predict"], booster_predict(clf.get_booster(), rows),
                               rtol=1e-6)
    np.testing.assert_allclose(out["predict_proba"], clf.predict_proba(rows), rtol=1e-6)
    assert out["label"].tolist() == clf.predict(rows).tolist()


def test_softmax_booster(server, models):
    booster = models[1]["softmax"]
    out = outputs_of(v2(server, "softmax", [tensor(ROWS)], ["predict", "predict_proba", "label"]))
    assert out["predict"].tolist() == booster_predict(booster, ROWS).tolist()
    assert out["label"].tolist() == booster_predict(booster, ROWS).astype(int).tolist()
    margin = booster_predict(booster, ROWS, output_margin=True)
    expected = np.exp(margin) / np.exp(margin).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out["predict_proba"], expected, rtol=1e-5)
    np.testing.assert_allclose(out["predict_proba"].sum(axis=1), 1.0, rtol=1e-6)


def test_named_features_by_column_v1_objects_or_matrix(server, models):
    regressor = models[1]["regressor"]
    frame = pd.DataFrame(ROWS, columns=FEATURES)
    expected = regressor.predict(frame)

    columns = [tensor(frame[c].to_numpy(), name=c) for c in reversed(FEATURES)]
    np.testing.assert_allclose(outputs_of(v2(server, "regressor", columns))["predict"],
                               expected, rtol=1e-6)
    objects = v1(server, "regressor", {"instances": frame.to_dict(orient="records")})
    np.testing.assert_allclose(objects.json()["predictions"], expected, rtol=1e-6)
    matrix = v2(server, "regressor", [tensor(ROWS)])
    np.testing.assert_allclose(outputs_of(matrix)["predict"], expected, rtol=1e-6)

    missing = v2(server, "regressor", columns[:2])
    assert missing.status_code == 400
    assert "missing sepal_length, sepal_width" in missing.json()["error"]
    unknown = v2(server, "regressor", [*columns, tensor([1.0] * 4, name="colour")])
    assert unknown.status_code == 400 and "unknown colour" in unknown.json()["error"]


def test_multitarget_regressor(server, models):
    multi = models[1]["multitarget"]
    out = outputs_of(v2(server, "multitarget", [tensor(ROWS)]))
    assert out["predict"].shape == (4, 2)
    np.testing.assert_allclose(out["predict"], multi.predict(np.array(ROWS)), rtol=1e-6)
    with pytest.raises(AssertionError):  # a regressor has no probabilities
        outputs_of(v2(server, "multitarget", [tensor(ROWS)], ["predict_proba"]))


def test_categorical_features_by_name(server, models):
    model = models[1]["categorical"]
    colors, sizes = ["red", "blue", "green", "red"], [0.5, -1.0, 0.0, 2.0]
    expected = model.predict(pd.DataFrame({"color": pd.Categorical(colors), "size": sizes}))
    inputs = [{"name": "color", "datatype": "BYTES", "shape": [4], "data": colors},
              tensor(sizes, name="size")]
    np.testing.assert_allclose(outputs_of(v2(server, "categorical", inputs))["predict"],
                               expected, rtol=1e-6)
    rows = [{"color": c, "size": s} for c, s in zip(colors, sizes)]
    np.testing.assert_allclose(v1(server, "categorical", {"instances": rows}).json()
                               ["predictions"], expected, rtol=1e-6)
    matrix = v2(server, "categorical", [tensor([[1.0, 2.0]])])
    assert matrix.status_code == 400 and "categorical features" in matrix.json()["error"]


def test_metadata_matches_the_models(server):
    def meta(name):
        return requests.get(f"{server.url}/v2/models/{name}", timeout=10).json()

    iris = meta("iris_json")
    assert iris["platform"] == "xgboost"
    assert iris["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]
    assert iris["outputs"] == [
        {"name": "predict", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "predict_proba", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "label", "datatype": "INT64", "shape": [-1]},
    ]
    assert meta("binary")["outputs"] == [
        {"name": "predict", "datatype": "FP32", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "label", "datatype": "INT64", "shape": [-1]},
    ]
    regressor = meta("regressor")
    assert regressor["inputs"] == [{"name": n, "datatype": "FP32", "shape": [-1]}
                                   for n in FEATURES]
    assert regressor["outputs"] == [{"name": "predict", "datatype": "FP32", "shape": [-1]}]
    assert meta("multitarget")["outputs"] == [
        {"name": "predict", "datatype": "FP32", "shape": [-1, 2]}]
    assert meta("categorical")["inputs"] == [
        {"name": "color", "datatype": "BYTES", "shape": [-1]},
        {"name": "size", "datatype": "FP32", "shape": [-1]}]


def test_metadata_shapes_are_what_predict_returns(server):
    for name in ("iris_json", "binary", "softmax", "multitarget"):
        meta = requests.get(f"{server.url}/v2/models/{name}", timeout=10).json()
        width = meta["inputs"][0]["shape"][1]
        rows = np.random.default_rng(2).normal(size=(3, width))
        wanted = [o["name"] for o in meta["outputs"]]
        reply = v2(server, name, [tensor(rows)], wanted).json()["outputs"]
        for spec, out in zip(meta["outputs"], reply):
            assert out["name"] == spec["name"] and out["datatype"] == spec["datatype"]
            assert out["shape"][1:] == spec["shape"][1:], (name, spec, out["shape"])


@pytest.mark.parametrize(
    "body,message",
    [
        ({"instances": [[1, 2, 3]]}, "model 'iris_json' expects 4 features per row, got 3"),
        ({"instances": [[1, 2, 3, 4, 5]]}, "expects 4 features per row, got 5"),
        ({"instances": [1, 2, 3, 4]}, "expects a 2-D [rows, 4] input, got shape [4]"),
        ({"instances": [["a", "b", "c", "d"]]}, "must be numbers"),
        ({"instances": [[1, 2, 3, 4], [1, 2]]}, "not a rectangular array"),
        ({"rows": ROWS}, "a v1 request needs 'instances' or 'inputs'"),
    ],
)
def test_v1_bad_input_is_400(server, body, message):
    reply = v1(server, "iris_json", body)
    assert reply.status_code == 400 and message in reply.json()["error"], reply.text


def test_v2_bad_input_is_400(server):
    unknown_output = v2(server, "iris_json", [tensor(ROWS)], ["probabilities"])
    assert unknown_output.status_code == 400
    assert unknown_output.json()["error"] == (
        "model 'iris_json' has no output 'probabilities'; it has predict, predict_proba, label")
    two = v2(server, "iris_json", [tensor(ROWS), tensor(ROWS, name="more")])
    assert two.status_code == 400 and "takes one [rows, 4] input, got 2" in two.json()["error"]
    strings = v2(server, "iris_json", [{"name": "input-0", "datatype": "BYTES", "shape": [1, 4],
                                        "data": ["a", "b", "c", "d"]}])
    assert strings.status_code == 400 and "must be numbers" in strings.json()["error"]
    regressor_proba = v2(server, "regressor", [tensor(ROWS)], ["label"])
    assert regressor_proba.status_code == 400 and "has no output 'label'" in \
        regressor_proba.json()["error"]


def test_concurrent_requests_of_different_sizes_are_answered_each_correctly(server, models):
    """Merged by the batcher into shared calls, and split back per request."""
    booster = models[1]["iris_json"].get_booster()
    rng = np.random.default_rng(3)
    batches = [rng.uniform(0, 8, size=(int(n), 4)) for n in rng.integers(1, 40, size=48)]

    def ask(rows):
        return outputs_of(v2(server, "iris_json", [tensor(rows)], ["predict", "label"]))

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, batches))
    for rows, out in zip(batches, answers):
        np.testing.assert_allclose(out["predict"], booster_predict(booster, rows), rtol=1e-6)
        assert out["label"].tolist() == np.argmax(booster_predict(booster, rows), 1).tolist()


def test_example_serves_alone_with_predict_proba_and_nthread(launch, models):
    server = launch("-m", "xgbserver", "--model_name", "iris", "--model_dir", str(EXAMPLE),
                    "--nthread", "1", env={"PREDICT_PROBA": "true"})
    clf = models[1]["iris_json"]
    reply = v1(server, "iris", {"instances": ROWS})
    np.testing.assert_allclose(reply.json()["predictions"], clf.predict_proba(np.array(ROWS)),
                               rtol=1e-6)
    assert "nthread=1" in server.output()
    assert "ignoring unknown arguments" not in server.output()
    assert requests.get(server.url + "/v1/models", timeout=10).json() == {"models": ["iris"]}


def _copy_example(folder: Path, *names: str) -> None:
    for name in names:
        shutil.copy(EXAMPLE / "model.json", folder / name)


@pytest.mark.parametrize(
    "setup,message",
    [
        (lambda d: None, "no XGBoost model in"),
        (lambda d: (d / "README.md").write_text("hi"), "found README.md"),
        (lambda d: _copy_example(d, "a.json", "b.ubj"), "several model files in"),
        (lambda d: shutil.copy(DATA / "legacy-binary.bst", d / "model.bst"),
         "legacy binary format, which XGBoost 3.1 and later cannot read"),
        (lambda d: (d / "model.json").write_text('{"learner": {"attributes": 1}, '
                                                 '"version": [9, 1, 0]}'),
         "(saved with XGBoost 9.1.0; this server runs " + xgb.__version__ +
         ": an image built with `make build-xgbserver FRAMEWORK_VERSION=9.1.0`"),
    ],
    ids=["empty", "no-model-file", "two-models", "legacy-binary", "unreadable"],
)
def test_startup_errors_are_clean(launch, tmp_path, setup, message):
    setup(tmp_path)
    server = launch("-m", "xgbserver", "--model_dir", str(tmp_path), wait=False)
    assert server.wait_exit() == 1
    output = server.output()
    assert message in output and str(tmp_path.name) in output, output
    assert "Traceback" not in output and "Stack trace" not in output and "[bt]" not in output


def test_a_model_saved_by_another_xgboost_is_logged_with_both_versions(launch, tmp_path):
    saved = json.loads((EXAMPLE / "model.json").read_text())
    saved["version"] = [2, 1, 4]
    (tmp_path / "model.json").write_text(json.dumps(saved))
    server = launch("-m", "xgbserver", "--model_name", "iris", "--model_dir", str(tmp_path))
    assert v1(server, "iris", {"instances": ROWS}).status_code == 200
    assert ("model.json was saved with XGBoost 2.1.4; this server runs " + xgb.__version__ +
            ": an image built with `make build-xgbserver FRAMEWORK_VERSION=2.1.4`"
            in server.output())


def test_mlserver_pd_request_to_a_plain_array_model(server, models):
    """MLServer's `pd` content type: one input per column of the client's DataFrame, for a
    model fit on a plain array: the columns are taken in order, outputs marked as MLServer's."""
    booster = models[1]["iris_json"].get_booster()
    columns = [{**tensor(np.array(ROWS)[:, [i]], name=f"column {i}"),
                "parameters": {"content_type": "np"}} for i in range(4)]
    reply = requests.post(f"{server.url}/v2/models/iris_json/infer", timeout=10,
                          json={"inputs": columns, "parameters": {"content_type": "pd"}})
    out = reply.json()["outputs"][0]
    np.testing.assert_allclose(np.reshape(out["data"], out["shape"]),
                               booster_predict(booster, ROWS), rtol=1e-6)
    assert out["parameters"] == {"content_type": "np"}


def test_binary_tensors_at_every_offset(server):
    # XGBoost refuses a misaligned buffer: the runtime copies the input when it is one.
    statuses = check_every_offset(server.url)
    assert statuses[("iris_json", "FP32")] == statuses[("categorical", "FP64")] == "200"


def test_kserve_v2_payloads(server, models):
    """KServe's xgboost samples: nested data, `output-0` in JSON and binary, every output in
    binary; KServe's xgbserver names the booster's prediction `output-0`."""
    rows = ROWS[:2]
    expected = booster_predict(models[1]["softmax"], rows)
    tensor_ = {"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": rows}
    plain = requests.post(f"{server.url}/v2/models/softmax/infer", timeout=10, json={
        "inputs": [tensor_], "outputs": [{"name": "output-0"}]})
    assert plain.status_code == 200, plain.text
    (output,) = plain.json()["outputs"]
    assert output["name"] == "output-0" and output["data"] == expected.tolist()
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    inputs = [httpclient.InferInput("input-0", [2, 4], "FP32")]
    inputs[0].set_data_from_numpy(np.array(rows, dtype=np.float32), binary_data=False)
    wanted = [httpclient.InferRequestedOutput("output-0", binary_data=True)]
    binary = client.infer("softmax", inputs, outputs=wanted)
    assert binary.as_numpy("output-0").tolist() == expected.tolist()
    every = client.infer("softmax", inputs)  # binary_data_output: true
    assert every.as_numpy("predict").tolist() == expected.tolist()


def test_kserve_v1_records_under_inputs(server, models):
    frame = pd.DataFrame(ROWS, columns=FEATURES)
    expected = models[1]["regressor"].predict(frame)
    records = frame.to_dict(orient="records")
    for body in ({"inputs": records}, {"inputs": [records]},
                 {"inputs": [{name: [value] for name, value in row.items()} for row in records]}):
        reply = v1(server, "regressor", body)
        assert reply.status_code == 200, (body, reply.text)
        np.testing.assert_allclose(reply.json()["predictions"], expected, rtol=1e-6)
    # A feature some records lack is missing for them (NaN), which XGBoost takes.
    partial = [dict(records[0]), records[1]]
    del partial[0]["petal_width"]
    sparse = v1(server, "regressor", {"inputs": [partial]})
    holes = pd.DataFrame(partial, columns=FEATURES)
    assert np.isnan(holes["petal_width"][0])
    np.testing.assert_allclose(sparse.json()["predictions"],
                               models[1]["regressor"].predict(holes), rtol=1e-6)
