"""tfserver over REST, against TensorFlow called directly: a SavedModel in TF Serving's version
folders (started with TF Serving's own flags), and a repository of Keras files, the example and
models that cannot load."""

from __future__ import annotations

import base64
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

import tf_test_models as models
from binary_offsets import check_every_offset

tf = models.tf
# Keras' own call into numpy while saving, under numpy 2.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "tensorflow-iris"
ROWS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6], [5.1, 3.5, 1.4, 0.2]]


def v1(server, model, body):
    return requests.post(f"{server.url}/v1/models/{model}:predict", json=body, timeout=30)


def v2(server, model, body):
    return requests.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=30)


def v2_outputs(reply) -> dict[str, np.ndarray]:
    assert reply.status_code == 200, reply.text
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in reply.json()["outputs"]}


def error_of(reply, status=400) -> str:
    assert reply.status_code == status, reply.text
    return reply.json()["error"]


# -- a SavedModel in version folders ----------------------------------------------------------
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """<base>/2 and <base>/10: version 10 is served (numbers, not names, are compared)."""
    base = tmp_path_factory.mktemp("tf-base")
    models.save_signatures(base / "2", seed=2)
    models.save_signatures(base / "10", seed=10)
    return base


@pytest.fixture(scope="module")
def direct(saved_model):
    """The served version's signatures, called the way TensorFlow is called."""
    loaded = tf.saved_model.load(str(saved_model / "10"))

    def call(signature="serving_default", **inputs):
        result = loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in result.items()}

    call.loaded = loaded
    return call


@pytest.fixture(scope="module")
def server(launch, saved_model):
    # TensorFlow Serving's flags, as a ServingRuntime written for tensorflow/serving passes them.
    return launch("-m", "tfserver", "--model_name", "tfm", f"--model_base_path={saved_model}",
                  "--tensorflow_intra_op_parallelism=1")


def test_metadata_comes_from_the_serving_signature(server):
    meta = requests.get(server.url + "/v2/models/tfm").json()
    assert meta == {
        "name": "tfm", "versions": ["10"], "platform": "tensorflow_savedmodel",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]},
                    {"name": "scores", "datatype": "FP32", "shape": [-1, 3]}],
    }
    assert requests.get(server.url + "/v2/models/tfm/versions/10").status_code == 200
    assert requests.get(server.url + "/v2/models/tfm/versions/2").status_code == 404


def test_tf_serving_flags_are_understood(server, saved_model):
    # --model_base_path found the model (the test above); the thread flag reached TensorFlow.
    assert f"loaded {saved_model / '10'} (savedmodel)" in server.output()
    assert "1 intra-op and 2 inter-op thread(s)" in server.output()


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT64"])
def test_v2_matches_the_signature_called_directly(server, direct, datatype):
    rows = np.array(ROWS) if datatype != "INT64" else np.array(ROWS).round()
    body = {"inputs": [{"name": "x", "datatype": datatype, "shape": [3, 4],
                        "data": rows.reshape(-1).tolist()}]}
    got = v2_outputs(v2(server, "tfm", body))
    want = direct(x=rows.astype(np.float32))
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-6)
    np.testing.assert_array_equal(got["label"], want["label"])


def test_v2_outputs_can_be_chosen(server):
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": ROWS[0]}],
            "outputs": [{"name": "label"}]}
    assert list(v2_outputs(v2(server, "tfm", body))) == ["label"]


def test_v2_other_signature_by_parameter(server, direct):
    body = {"parameters": {"signature_name": "pair"}, "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]},
        {"name": "b", "datatype": "INT32", "shape": [2], "data": [10, 20]}]}
    got = v2_outputs(v2(server, "tfm", body))
    want = direct("pair", a=np.array([[1, 2], [3, 4]], np.float32), b=np.array([10, 20], np.int32))
    np.testing.assert_allclose(got["total"], want["total"])
    assert got["mean"].shape == () and got["mean"] == pytest.approx(float(want["mean"]))


def test_v1_row_format_answers_predictions_per_instance(server, direct):
    reply = v1(server, "tfm", {"instances": ROWS})
    assert reply.status_code == 200, reply.text
    predictions = reply.json()["predictions"]
    want = direct(x=np.array(ROWS, np.float32))
    assert [sorted(p) for p in predictions] == [["label", "scores"]] * 3
    assert [p["label"] for p in predictions] == want["label"].tolist()
    np.testing.assert_allclose([p["scores"] for p in predictions], want["scores"], rtol=1e-6)


def test_v1_columnar_format_answers_outputs(server, direct):
    want = direct(x=np.array(ROWS, np.float32))
    for body in ({"inputs": ROWS}, {"inputs": {"x": ROWS}}, {"signature_name": "serving_default",
                                                            "inputs": {"x": ROWS}}):
        outputs = v1(server, "tfm", body).json()["outputs"]
        assert outputs["label"] == want["label"].tolist()
        np.testing.assert_allclose(outputs["scores"], want["scores"], rtol=1e-6)


def test_v1_records_under_inputs_are_rows(server, direct):
    # KServe's other name for `instances`: a list of objects, which TF Serving's columnar
    # format cannot mean (its tensors hold no objects but {"b64": ...} strings).
    want = direct(x=np.array(ROWS, np.float32))
    records = {"inputs": [{"x": row} for row in ROWS]}
    predictions = v1(server, "tfm", records).json()["predictions"]
    assert [p["label"] for p in predictions] == want["label"].tolist()
    np.testing.assert_allclose([p["scores"] for p in predictions], want["scores"], rtol=1e-6)
    # b64 strings are still a columnar tensor.
    encoded = base64.b64encode(b"ab").decode()
    columns = v1(server, "tfm", {"signature_name": "text", "inputs": [{"b64": encoded}]}).json()
    assert columns["outputs"]["length"] == [2]


def test_v1_single_output_signature_is_not_wrapped(server, direct):
    want = direct("scores_only", x=np.array(ROWS[:1], np.float32))["scores"]
    rows = v1(server, "tfm", {"signature_name": "scores_only", "instances": ROWS[:1]}).json()
    np.testing.assert_allclose(rows["predictions"], want, rtol=1e-6)
    columns = v1(server, "tfm", {"signature_name": "scores_only", "inputs": ROWS[:1]}).json()
    np.testing.assert_allclose(columns["outputs"], want, rtol=1e-6)


def test_v1_binary_in_and_out(server, direct):
    raw = b"\xffcaf\xc3\xa9"  # not UTF-8
    body = {"signature_name": "text",
            "instances": [{"b64": base64.b64encode(raw).decode()}, "plain"]}
    reply = v1(server, "tfm", body)
    assert reply.status_code == 200, reply.text
    want = direct("text", text=np.array([raw, b"plain"], dtype=object))
    predictions = reply.json()["predictions"]
    assert [p["length"] for p in predictions] == want["length"].tolist()
    # *_bytes outputs travel as base64; other strings as text when they are text.
    assert [base64.b64decode(p["upper_bytes"]["b64"]) for p in predictions] == \
        want["upper_bytes"].tolist()
    assert predictions[1]["upper"] == "PLAIN"
    assert base64.b64decode(predictions[0]["upper"]["b64"]) == want["upper"][0]

    columns = v1(server, "tfm", {"signature_name": "text", "inputs": {"text": ["ab"]}}).json()
    assert columns["outputs"] == {"length": [2], "upper": ["AB"],
                                  "upper_bytes": [{"b64": base64.b64encode(b"AB").decode()}]}


def test_v1_named_instances_for_several_inputs(server, direct):
    body = {"signature_name": "pair",
            "instances": [{"a": [1, 2], "b": 10}, {"a": [3, 4], "b": 20}]}
    want = direct("pair", a=np.array([[1, 2], [3, 4]], np.float32), b=np.array([10, 20], np.int32))
    # `mean` is one number for the whole batch: the row format cannot carry it.
    message = error_of(v1(server, "tfm", body))
    assert "one entry per example" in message and "'mean' []" in message
    columns = v1(server, "tfm", {"signature_name": "pair",
                                 "inputs": {"a": [[1, 2], [3, 4]], "b": [10, 20]}}).json()
    np.testing.assert_allclose(columns["outputs"]["total"], want["total"])
    assert columns["outputs"]["mean"] == pytest.approx(float(want["mean"]))


@pytest.mark.parametrize("body,message", [
    ({"inputs": [{"name": "y", "datatype": "FP32", "shape": [1, 4], "data": ROWS[0]}]},
     "signature 'serving_default' of model 'tfm' has no input 'y'; it takes 'x' (FP32 [-1, 4])"),
    ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": ROWS[0][:3]}]},
     "input 'x' of signature 'serving_default' of model 'tfm' expects shape [-1, 4], got [1, 3]"),
    ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [4], "data": ROWS[0]}]},
     "expects shape [-1, 4], got [4]"),
    ({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1, 4], "data": list("abcd")}]},
     "input 'x' of signature 'serving_default' of model 'tfm' expects FP32 [-1, 4], got BYTES"),
    ({"inputs": [{"name": "x", "datatype": "BOOL", "shape": [1, 4], "data": [True] * 4}]},
     "expects FP32 [-1, 4], got BOOL"),
    ({"parameters": {"signature_name": "pair"}, "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]},
        {"name": "b", "datatype": "FP32", "shape": [1], "data": [1.5]}]},
     "input 'b' of signature 'pair' of model 'tfm' expects INT32 [-1]: integers"),
    ({"parameters": {"signature_name": "pair"}, "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]},
     "signature 'pair' of model 'tfm' needs input 'b' (INT32 [-1])"),
    ({"parameters": {"signature_name": "nope"}, "inputs": [
        {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": ROWS[0]}]},
     "model 'tfm' has no signature 'nope'; it has 'serving_default'"),
])
def test_v2_inputs_that_do_not_fit_are_400(server, body, message):
    assert message in error_of(v2(server, "tfm", body))


@pytest.mark.parametrize("body,message", [
    ({"instances": ROWS, "inputs": ROWS}, "exactly one of 'instances'"),
    ({"rows": ROWS}, "exactly one of 'instances'"),
    ({"instances": []}, "'instances' must be a non-empty list"),
    ({"instances": [[1, 2, 3, 4], [1, 2]]}, "input 'x' is not a rectangular array"),
    ({"instances": [["a", "b", "c", "d"]]}, "expects FP32 [-1, 4], got BYTES"),
    ({"instances": [[1, 2, 3]]}, "expects shape [-1, 4], got [1, 3]"),
    ({"instances": [{"y": [1, 2, 3, 4]}]}, "has no input 'y'; it takes 'x' (FP32 [-1, 4])"),
    ({"signature_name": "missing", "instances": ROWS}, "has no signature 'missing'"),
    ({"signature_name": "pair", "instances": [[1, 2]]},
     "takes 2 inputs, 'a' (FP32 [-1, 2]), 'b' (INT32 [-1]): send each instance as an object"),
    ({"signature_name": "pair", "instances": [{"a": [1, 2], "b": 1}, {"a": [1, 2]}]},
     "every instance must be an object with the same input names"),
    ({"signature_name": "text", "instances": [{"b64": "not base64!"}]},
     "'b64' must hold base64 text"),
    ({"signature_name": "text", "instances": [1]}, "takes strings or {\"b64\": ...} objects"),
])
def test_v1_bad_requests_are_400(server, body, message):
    assert message in error_of(v1(server, "tfm", body))


def test_concurrent_requests_all_get_their_own_answer(server, direct):
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(n, 4)).astype(np.float32) for n in range(1, 33)]

    def one(rows):
        return v1(server, "tfm", {"instances": rows.tolist()}).json()["predictions"]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, batches))
    for rows, predictions in zip(batches, answers):
        assert [p["label"] for p in predictions] == direct(x=rows)["label"].tolist()


# -- a repository: Keras files, the example, models that cannot load --------------------------
@pytest.fixture(scope="module")
def keras_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tf-repository")
    functional = models.keras_model()
    (root / "keras").mkdir()
    functional.save(root / "keras" / "model.keras")
    sequential = models.sequential_model()
    (root / "legacy").mkdir()
    sequential.save(root / "legacy" / "model.h5")
    shutil.copytree(EXAMPLE, root / "iris", ignore=shutil.ignore_patterns("*.py"))
    (root / "future").mkdir()
    models.future_keras_file(root / "keras" / "model.keras", root / "future" / "model.keras")
    return root, functional, sequential


@pytest.fixture(scope="module")
def repository(launch, keras_models):
    return launch("-m", "tfserver", "--model_dir", str(keras_models[0]))


def test_keras_file_matches_keras(repository, keras_models):
    _, functional, _ = keras_models
    features = np.random.default_rng(1).normal(size=(2, 4)).astype(np.float32)
    tokens = np.array([[1, 2, 3], [9, 0, 4]], np.int32)
    want = {k: v.numpy() for k, v in functional(
        {"features": tf.constant(features), "tokens": tf.constant(tokens)}).items()}
    body = {"inputs": [
        {"name": "features", "datatype": "FP32", "shape": [2, 4], "data": features.ravel().tolist()},
        {"name": "tokens", "datatype": "INT64", "shape": [2, 3], "data": tokens.ravel().tolist()}]}
    got = v2_outputs(v2(repository, "keras", body))
    np.testing.assert_allclose(got["probs"], want["probs"], rtol=1e-5)
    np.testing.assert_allclose(got["value"], want["value"], rtol=1e-5, atol=1e-6)
    rows = v1(repository, "keras", {"instances": [
        {"features": features[i].tolist(), "tokens": tokens[i].tolist()} for i in range(2)]})
    assert rows.status_code == 200, rows.text
    np.testing.assert_allclose([p["probs"] for p in rows.json()["predictions"]], want["probs"],
                               rtol=1e-5)
    meta = requests.get(repository.url + "/v2/models/keras").json()
    assert meta["platform"] == "tensorflow_keras"
    assert sorted(meta["inputs"], key=lambda i: i["name"]) == [
        {"name": "features", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "tokens", "datatype": "INT32", "shape": [-1, 3]}]
    assert sorted(o["name"] for o in meta["outputs"]) == ["probs", "value"]


def test_legacy_h5_file(repository, keras_models):
    _, _, sequential = keras_models
    x = np.array(ROWS, np.float32)
    predictions = v1(repository, "legacy", {"instances": ROWS}).json()["predictions"]
    np.testing.assert_allclose(predictions, sequential(tf.constant(x)).numpy(), rtol=1e-5,
                               atol=1e-6)
    meta = requests.get(repository.url + "/v2/models/legacy").json()
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]


def test_example_model_serves_iris(repository):
    loaded = tf.saved_model.load(str(EXAMPLE / "1"))
    want = loaded.signatures["serving_default"](features=tf.constant(ROWS, tf.float32))
    predictions = v1(repository, "iris", {"instances": ROWS}).json()["predictions"]
    assert [p["class"] for p in predictions] == want["class"].numpy().tolist() == [1, 1, 0]
    np.testing.assert_allclose([p["probabilities"] for p in predictions],
                               want["probabilities"].numpy(), rtol=1e-6)


def test_keras_file_from_a_newer_keras_is_unavailable_with_the_reason(repository):
    index = {m["name"]: m for m in
             requests.post(repository.url + "/v2/repository/index", timeout=10).json()}
    assert index["future"]["state"] == "UNAVAILABLE"
    reason = index["future"]["reason"]
    assert "could not load model.keras" in reason
    assert "it was saved with Keras 9.0.0; this server has Keras" in reason
    assert {index[n]["state"] for n in ("keras", "legacy", "iris")} == {"READY"}


def test_binary_tensors_at_every_offset(repository):
    statuses = check_every_offset(repository.url)
    assert statuses[("iris", "FP32")] == statuses[("keras", "FP64")] == "200"
