"""The scikit-learn runtime over v1 and v2 REST, against the estimator called directly."""

import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import requests
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression

REPO = Path(__file__).resolve().parents[2]
IRIS = REPO / "examples" / "sklearn-iris"
ROWS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6], [5.1, 3.5, 1.4, 0.2]]


@pytest.fixture(scope="module")
def estimator():
    return joblib.load(IRIS / "model.joblib")


def v1(server, model, body):
    return requests.post(f"{server.url}/v1/models/{model}:predict", json=body, timeout=10)


def v2(server, model, body):
    return requests.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=10)


def test_v1_liveness_list_and_readiness(iris_server):
    assert requests.get(iris_server.url + "/").json() == {"status": "alive"}
    assert requests.get(iris_server.url + "/v1/models").json() == {"models": ["iris"]}
    assert requests.get(iris_server.url + "/v1/models/iris").json() == {
        "name": "iris", "ready": True}
    missing = requests.get(iris_server.url + "/v1/models/rose")
    assert missing.status_code == 404 and missing.json() == {"error": "model 'rose' not found"}


def test_v1_instances_match_the_estimator(iris_server, estimator):
    reply = v1(iris_server, "iris", {"instances": ROWS})
    assert reply.status_code == 200
    assert reply.json() == {"predictions": estimator.predict(np.array(ROWS)).tolist()}


def test_v1_inputs_form(iris_server, estimator):
    reply = v1(iris_server, "iris", {"inputs": ROWS}).json()
    assert reply["predictions"] == estimator.predict(np.array(ROWS)).tolist()


def test_v2_predict_and_proba_match_the_estimator(iris_server, estimator):
    body = {
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [3, 4], "data": ROWS}],
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    }
    outputs = v2(iris_server, "iris", body).json()["outputs"]
    assert outputs[0]["data"] == estimator.predict(np.array(ROWS)).tolist()
    assert outputs[0]["datatype"] == "INT64"
    proba = np.array(outputs[1]["data"]).reshape(outputs[1]["shape"])
    np.testing.assert_allclose(proba, estimator.predict_proba(np.array(ROWS)))


def test_v2_default_output_is_predict(iris_server):
    body = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 4],
                        "data": ROWS[0]}]}
    outputs = v2(iris_server, "iris", body).json()["outputs"]
    assert [o["name"] for o in outputs] == ["predict"]


def test_metadata_reports_real_inputs_and_outputs(iris_server):
    meta = requests.get(iris_server.url + "/v2/models/iris").json()
    assert meta["platform"] == "scikit-learn"
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert meta["outputs"] == [
        {"name": "predict", "datatype": "INT64", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
    ]


@pytest.mark.parametrize("rows", [[[1, 2, 3]], [[1, 2, 3, 4, 5]]])
def test_wrong_feature_count_is_400(iris_server, rows):
    reply = v1(iris_server, "iris", {"instances": rows})
    assert reply.status_code == 400
    assert reply.json() == {
        "error": f"model 'iris' expects 4 features per row, got {len(rows[0])}"}


@pytest.mark.parametrize(
    "body,message",
    [
        ({"rows": ROWS}, "a v1 request needs 'instances' or 'inputs'"),
        ({"instances": {"a": 1}}, "'instances' must be a list"),
        ({"instances": [[1, 2, 3, 4], [1, 2]]}, "not a rectangular array"),
        ({"instances": [1, 2, 3, 4]}, "expects a 2-D [rows, 4] input, got shape [4]"),
        ({"instances": [["a", "b", "c", "d"]]}, "cannot use this input"),
        ({"instances": [{}]}, "need at least one key"),  # found by schemathesis
    ],
)
def test_v1_bad_input_is_400(iris_server, body, message):
    reply = v1(iris_server, "iris", body)
    assert reply.status_code == 400 and message in reply.json()["error"]


def test_v1_unknown_model_and_bad_json(iris_server):
    assert v1(iris_server, "rose", {"instances": ROWS}).status_code == 404
    bad = requests.post(iris_server.url + "/v1/models/iris:predict", data=b"[")
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]
    method = requests.get(iris_server.url + "/v1/models/iris:predict")
    assert method.status_code == 405


def test_predict_proba_env_switches_v1(launch, estimator):
    server = launch("-m", "sklearnserver", "--model_name", "iris", "--model_dir", str(IRIS),
                    env={"PREDICT_PROBA": "true"})
    predictions = v1(server, "iris", {"instances": ROWS}).json()["predictions"]
    np.testing.assert_allclose(predictions, estimator.predict_proba(np.array(ROWS)))


@pytest.fixture(scope="module")
def frame_model_dir(tmp_path_factory):
    """A model fit on a DataFrame: it wants its features by name."""
    data = load_iris(as_frame=True)
    frame = data.frame.drop(columns="target")
    frame.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    model = RandomForestRegressor(n_estimators=5, random_state=0).fit(frame, data.target)
    folder = tmp_path_factory.mktemp("frame")
    joblib.dump(model, folder / "model.pkl")
    return folder, model, frame


def test_dataframe_model_by_name_over_v1_and_v2(launch, frame_model_dir):
    folder, model, frame = frame_model_dir
    server = launch("-m", "sklearnserver", "--model_name", "frame", "--model_dir", str(folder))
    sample = frame.iloc[:3]
    expected = model.predict(sample).tolist()

    rows = sample.to_dict(orient="records")
    assert v1(server, "frame", {"instances": rows}).json()["predictions"] == expected

    columns = [{"name": c, "datatype": "FP64", "shape": [3], "data": sample[c].tolist()}
               for c in reversed(sample.columns)]
    assert v2(server, "frame", {"inputs": columns}).json()["outputs"][0]["data"] == expected

    meta = requests.get(server.url + "/v2/models/frame").json()
    assert [i["name"] for i in meta["inputs"]] == list(frame.columns)

    missing = v2(server, "frame", {"inputs": columns[:2]})
    assert missing.status_code == 400
    assert "missing sepal_length, sepal_width" in missing.json()["error"]


def test_skops_model_loads(launch, tmp_path):
    import skops.io as sio

    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(features, labels)
    sio.dump(model, tmp_path / "model.skops")
    server = launch("-m", "sklearnserver", "--model_name", "sk", "--model_dir", str(tmp_path))
    predictions = v1(server, "sk", {"instances": ROWS}).json()["predictions"]
    assert predictions == model.predict(np.array(ROWS)).tolist()


def test_skops_untrusted_type_is_refused(launch, tmp_path):
    import skops.io as sio

    sio.dump({"fn": pd.DataFrame}, tmp_path / "model.skops")
    server = launch("-m", "sklearnserver", "--model_dir", str(tmp_path), wait=False)
    assert server.wait_exit() != 0
    assert "does not trust" in server.output() and "SKOPS_TRUSTED_TYPES" in server.output()


@pytest.mark.parametrize(
    "files,message",
    [
        ([], "no scikit-learn model in"),
        (["a.joblib", "b.pkl"], "several model files in"),
        (["README.md"], "found README.md"),
    ],
)
def test_missing_or_ambiguous_model_file_is_a_startup_error(launch, tmp_path, files, message):
    for name in files:
        (tmp_path / name).write_bytes((IRIS / "model.joblib").read_bytes())
    server = launch("-m", "sklearnserver", "--model_dir", str(tmp_path), wait=False)
    assert server.wait_exit() == 1
    assert message in server.output() and str(tmp_path) in server.output()
    assert "Traceback" not in server.output()


@pytest.fixture(scope="module")
def houses(tmp_path_factory):
    """A ColumnTransformer pipeline fit on a DataFrame: a city name and a floor one-hot encoded,
    area and rooms passed through; in a repository folder whose settings.json says rooms are
    integers (nothing in the fitted model tells)."""
    import json

    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "city": rng.choice(["Lyon", "Oslo", "Porto"], 60),
        "floor": rng.integers(0, 5, 60),
        "area": rng.uniform(20, 120, 60),
        "rooms": rng.integers(1, 6, 60),
    })
    price = frame["area"] * 30 + frame["rooms"] * 5 + frame["floor"] + (frame["city"] == "Oslo")
    encode = ColumnTransformer([("city", OneHotEncoder(handle_unknown="ignore"), ["city"]),
                                ("floor", OneHotEncoder(handle_unknown="ignore"), ["floor"])],
                               remainder="passthrough")
    model = Pipeline([("encode", encode), ("regress", LinearRegression())]).fit(frame, price)
    root = tmp_path_factory.mktemp("houses")
    (root / "houses").mkdir()
    joblib.dump(model, root / "houses" / "model.joblib")
    (root / "houses" / "settings.json").write_text(json.dumps(
        {"inputs": [{"name": "rooms", "datatype": "INT64"}]}))
    return root, model, frame


def test_dataframe_pipeline_metadata_has_each_columns_datatype(launch, houses):
    """Text columns are BYTES and integer ones INT64 (from the fitted encoders, and
    settings.json for what they do not tell), so tritonclient can build its inputs from the
    metadata alone."""
    import tritonclient.http as triton
    from tritonclient.utils import triton_to_np_dtype

    root, model, frame = houses
    server = launch("-m", "sklearnserver", "--model_dir", str(root))
    meta = requests.get(server.url + "/v2/models/houses").json()
    assert meta["inputs"] == [{"name": "city", "datatype": "BYTES", "shape": [-1]},
                              {"name": "floor", "datatype": "INT64", "shape": [-1]},
                              {"name": "area", "datatype": "FP64", "shape": [-1]},
                              {"name": "rooms", "datatype": "INT64", "shape": [-1]}]

    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    sample = frame.iloc[:5]
    inputs = []
    for spec in client.get_model_metadata("houses")["inputs"]:
        values = sample[spec["name"]].to_numpy().astype(triton_to_np_dtype(spec["datatype"]))
        tensor = triton.InferInput(spec["name"], [len(values)], spec["datatype"])
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    result = client.infer("houses", inputs)
    assert result.get_response()["model_name"] == "houses"  # a 200: tritonclient raises else
    np.testing.assert_allclose(result.as_numpy("predict"), model.predict(sample))


def test_settings_inputs_naming_no_feature_leave_the_model_unavailable(launch, houses, tmp_path):
    import shutil

    root, _, _ = houses
    shutil.copytree(root / "houses", tmp_path / "houses")
    (tmp_path / "houses" / "settings.json").write_text(
        '{"inputs": [{"name": "size", "datatype": "INT64"}]}')
    server = launch("-m", "sklearnserver", "--model_dir", str(tmp_path), wait=False)
    server.wait_listening()
    deadline = time.monotonic() + 60
    while (index := requests.post(server.url + "/v2/repository/index").json())[0]["state"] \
            == "LOADING" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert index[0]["state"] == "UNAVAILABLE"
    assert "'inputs' names 'size', which model 'houses' does not take" in index[0]["reason"]
