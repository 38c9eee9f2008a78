"""The scikit-learn runtime over v1 and v2 REST, against the estimator called directly."""

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import requests
import tritonclient.http as httpclient
from sklearn.compose import make_column_transformer
from sklearn.datasets import load_iris
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestRegressor
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from binary_offsets import check_every_offset

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


def test_tensorflow_serving_paths_on_another_runtime(iris_server):
    # Versions and labels in the URL name the one version served; TF Serving's metadata and
    # its :classify and :regress belong to TensorFlow models.
    url = iris_server.url + "/v1/models/iris"
    for path in ("/versions/1:predict", "/labels/stable:predict"):
        reply = requests.post(url + path, json={"instances": ROWS[:1]}, timeout=10)
        assert reply.json() == {"predictions": [1]}
    assert requests.get(url + "/versions/1", timeout=10).json() == {"name": "iris", "ready": True}
    for method, path, message in [
            ("POST", "/versions/2:predict", "model 'iris' version '2' not found"),
            ("GET", "/metadata", "model 'iris' has no v1 metadata; its metadata is at "
                                 "/v2/models/iris"),
            ("POST", ":classify", "model 'iris' answers :predict, not :classify")]:
        reply = requests.request(method, url + path, json={"examples": [{"x": 1}]}, timeout=10)
        assert reply.status_code == 404 and reply.json() == {"error": message}


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
        ({"instances": [{"a": {}}]}, "the instances hold no rows"),  # and this one too
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
    # As KServe's sklearnserver: its v2 output-0 is then the probabilities too.
    body = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [3, 4], "data": ROWS}],
            "outputs": [{"name": "output-0"}]}
    (output,) = v2(server, "iris", body).json()["outputs"]
    assert output["name"] == "output-0" and output["shape"] == [3, 3]
    np.testing.assert_allclose(np.reshape(output["data"], (3, 3)),
                               estimator.predict_proba(np.array(ROWS)))


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


# -- clients and payloads written for KServe ----------------------------------------------------
KSERVE_IRIS = ["sepal_length_(cm)", "sepal_width_(cm)", "petal_length_(cm)", "petal_width_(cm)"]
HOUSES = pd.DataFrame({
    "zoning": ["RL", "RM", "RL", "FV", "RM", "RL"],
    "lot_area": [8450, 9600, 11250, 9550, 14260, 6120],
    "lot_shape": ["Reg", "Reg", "IR1", "IR1", "Reg", "IR2"],
    "year_sold": [2008, 2007, 2008, 2006, 2008, 2009],
    "quality": [7, 6, 7, 7, 8, 5]})
PRICES = [208500, 181500, 223500, 140000, 250000, 129900]
DOCUMENTS = ["the rocket reached orbit", "a new graphics card driver", "orbit of the moon",
             "install the video driver"]


@pytest.fixture(scope="module")
def kserve_models(tmp_path_factory):
    """Models like those KServe's sklearn and lightgbm samples are sent to: iris fit on a
    DataFrame with KServe's column names (NaN-aware), a pipeline over string and integer
    columns, and a text pipeline; and the example."""
    root = tmp_path_factory.mktemp("kserve-models")
    features, labels = load_iris(return_X_y=True)
    frame = pd.DataFrame(features, columns=KSERVE_IRIS)
    made = {
        "iris": joblib.load(IRIS / "model.joblib"),
        "iris_frame": HistGradientBoostingClassifier(max_iter=20).fit(frame, labels),
        "houses": make_pipeline(
            make_column_transformer((OneHotEncoder(handle_unknown="ignore"),
                                     ["zoning", "lot_shape"]), remainder="passthrough"),
            LinearRegression()).fit(HOUSES, PRICES),
        "news": make_pipeline(TfidfVectorizer(), MultinomialNB()).fit(DOCUMENTS, [14, 1, 14, 1]),
    }
    for name, model in made.items():
        (root / name).mkdir()
        joblib.dump(model, root / name / "model.joblib")
    return root, made


@pytest.fixture(scope="module")
def kserve_server(launch, kserve_models):
    return launch("-m", "sklearnserver", "--model_dir", str(kserve_models[0]))


def test_binary_tensors_at_every_offset(kserve_server):
    statuses = check_every_offset(kserve_server.url, ["iris", "iris_frame"])
    assert statuses[("iris", "FP64")] == statuses[("iris_frame", "FP16")] == "200"


def test_kserve_output_names(kserve_server, estimator):
    """KServe's runtimes answer `output-0`; its payloads ask for it, in JSON or binary."""
    rows = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]
    tensor = {"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": rows}
    json_reply = v2(kserve_server, "iris", {"inputs": [tensor], "outputs": [{"name": "output-0"}]})
    assert json_reply.status_code == 200, json_reply.text
    assert json_reply.json()["outputs"] == [
        {"name": "output-0", "datatype": "INT64", "shape": [2], "data": [1, 1]}]
    client = httpclient.InferenceServerClient(kserve_server.url.removeprefix("http://"))
    inputs = [httpclient.InferInput("input-0", [2, 4], "FP32")]
    inputs[0].set_data_from_numpy(np.array(rows, dtype=np.float32))
    wanted = [httpclient.InferRequestedOutput(name, binary_data=True)
              for name in ("output-1", "output-0", "predict")]
    result = client.infer("iris", inputs, outputs=wanted)
    assert [o["name"] for o in result.get_response()["outputs"]] == [
        "output-1", "output-0", "predict"]
    np.testing.assert_allclose(result.as_numpy("output-1"),
                               estimator.predict_proba(np.array(rows, dtype=np.float32)))
    assert result.as_numpy("output-0").tolist() == result.as_numpy("predict").tolist() == [1, 1]
    beyond = v2(kserve_server, "iris", {"inputs": [tensor], "outputs": [{"name": "output-2"}]})
    assert beyond.status_code == 400
    assert "has no output 'output-2'; it has predict, predict_proba" in beyond.json()["error"]


def test_kserve_output_names_in_merged_batches(kserve_server):
    # Concurrent requests share one call of the model: each keeps the names it asked for.
    tensor = {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [ROWS[0]]}

    def ask(name):
        body = {"inputs": [tensor], "outputs": [{"name": name}]}
        return [o["name"] for o in v2(kserve_server, "iris", body).json()["outputs"]]

    names = ["output-0", "predict", "output-1", "predict_proba"] * 8
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(ask, names)) == [[name] for name in names]


def _kserve_frame(instances: list) -> pd.DataFrame:
    """The DataFrame KServe's runtimes predict on for these v1 instances."""
    return pd.concat([pd.DataFrame(instance) for instance in instances]).reindex(
        columns=KSERVE_IRIS)


@pytest.mark.parametrize("instance", [
    {"sepal_length_(cm)": [5.1], "sepal_width_(cm)": [3.5], "petal_length_(cm)": [1.4],
     "petal_width_(cm)": [0.2]},
    [{"sepal_length_(cm)": 5.1, "sepal_width_(cm)": 3.5, "petal_length_(cm)": 1.4,
      "petal_width_(cm)": 0.2}, {"sepal_length_(cm)": 6.7, "sepal_width_(cm)": 3.0,
                                 "petal_length_(cm)": 5.2, "petal_width_(cm)": 2.3}],
    [{"sepal_length_(cm)": 5.1}, {"sepal_width_(cm)": 3.5}, {"petal_length_(cm)": 1.4},
     {"petal_width_(cm)": 0.2}],
    {"sepal_length_(cm)": {"0": 5.1}, "sepal_width_(cm)": {"0": 3.5},
     "petal_length_(cm)": {"0": 1.4}, "petal_width_(cm)": {"0": 0.2}},
], ids=["column-lists", "records", "one-key-records", "index-objects"])
@pytest.mark.parametrize("key", ["inputs", "instances"])
def test_kserve_v1_shapes_of_records(kserve_server, kserve_models, instance, key):
    """KServe reads `inputs` as `instances`, each instance as pandas reads it."""
    expected = kserve_models[1]["iris_frame"].predict(_kserve_frame([instance, instance]))
    reply = v1(kserve_server, "iris_frame", {key: [instance, instance]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["predictions"] == expected.tolist()


@pytest.mark.parametrize("key", ["inputs", "instances"])
def test_kserve_v1_records_without_a_feature_are_400(kserve_server, key):
    # KServe's scikit-learn runtime refuses them too; its lightgbm runtime fills the feature in.
    instance = [{"sepal_length_(cm)": 5.1}, {"sepal_width_(cm)": 3.5}, {"petal_length_(cm)": 1.4}]
    reply = v1(kserve_server, "iris_frame", {key: [instance]})
    assert reply.status_code == 400
    assert "missing petal_width_(cm)" in reply.json()["error"]


def test_kserve_mixed_types_over_v1_and_v2(kserve_server, kserve_models):
    row = HOUSES.to_dict(orient="records")[2]
    expected = kserve_models[1]["houses"].predict(HOUSES.iloc[[2]]).tolist()
    instance = {name: [value] for name, value in row.items()}
    assert v1(kserve_server, "houses", {"instances": [instance]}).json()["predictions"] == expected
    assert v1(kserve_server, "houses", {"inputs": [instance]}).json()["predictions"] == expected
    inputs = [{"name": name, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "INT32",
               "data": [v]} for name, v in row.items()]
    reply = v2(kserve_server, "houses", {"parameters": {"content_type": "pd"}, "inputs": inputs})
    np.testing.assert_allclose(reply.json()["outputs"][0]["data"], expected)


def test_kserve_text_inputs(kserve_server, kserve_models):
    documents = ["the moon and its orbit", "update the graphics driver"]
    expected = kserve_models[1]["news"].predict(documents).tolist()
    assert v1(kserve_server, "news", {"inputs": documents}).json() == {"predictions": expected}
    assert v1(kserve_server, "news", {"instances": documents}).json() == {"predictions": expected}
    # With both, KServe reads `inputs`.
    both = {"inputs": documents, "instances": documents[:1]}
    assert v1(kserve_server, "news", both).json() == {"predictions": expected}
