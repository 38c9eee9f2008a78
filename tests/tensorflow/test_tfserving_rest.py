"""TensorFlow Serving's REST API, as its documentation defines it and a client written for TF
Serving calls it (plain HTTP with `requests`): the documentation's own examples against a model
like its example model, versions and labels in the URL, model status and metadata, `:classify`
and `:regress` on signatures saved for them, its error body, row and columnar formats."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import requests

import tf_test_models as models

WEIGHTS = np.array([0.5, -1.0, 2.0, 0.25], dtype=np.float32)
BIAS = 0.5
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


@pytest.fixture(scope="module")
def server(launch, tmp_path_factory):
    """A repository as TF Serving lays models out: numbered versions, the highest served."""
    root = tmp_path_factory.mktemp("tfserving-repository")
    models.save_half_plus_three(root / "half_plus_three" / "123")
    models.save_example_signatures(root / "iris" / "1", WEIGHTS * 0, 0.0)
    models.save_example_signatures(root / "iris" / "3", WEIGHTS, BIAS)
    models.save_signatures(root / "tfm" / "1", seed=1)
    models.save_image_classifier(root / "flowers" / "1")
    server = launch("-m", "tfserver", "--model_dir", str(root))
    server.root = root
    return server


def get(server, path):
    return requests.get(server.url + path, timeout=30)


def post(server, path, body):
    return requests.post(server.url + path, json=body, timeout=30)


def softmax(rows):
    e = np.exp(np.asarray(rows, dtype=np.float32)[:, :3])
    return e / e.sum(axis=1, keepdims=True)


# -- the documentation's examples ----------------------------------------------------------------
def test_the_documented_examples(server):
    predict = post(server, "/v1/models/half_plus_three:predict", {"instances": [1.0, 2.0, 5.0]})
    assert predict.json() == {"predictions": [3.5, 4.0, 5.5]}
    regress = post(server, "/v1/models/half_plus_three:regress", {
        "signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}, {"x": 2.0}]})
    assert regress.json() == {"results": [3.5, 4.0]}
    classify = post(server, "/v1/models/half_plus_three:classify", {
        "signature_name": "tensorflow/serving/classify", "examples": [{"x": 1.0}, {"x": 2.0}]})
    assert classify.json() == {"results": [[["", 3.5]], [["", 4.0]]]}
    status = get(server, "/v1/models/half_plus_three").json()
    assert status["model_version_status"] == [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK",
                                                              "error_message": ""}}]
    # KServe's readiness answer, in the same object, for KServe's probes and clients.
    assert status["name"] == "half_plus_three" and status["ready"] is True


def test_metadata_is_the_saved_signature_defs(server):
    meta = get(server, "/v1/models/half_plus_three/metadata").json()
    assert meta["model_spec"] == {"name": "half_plus_three", "signature_name": "",
                                  "version": "123"}
    defs = meta["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "tensorflow/serving/regress",
            "tensorflow/serving/classify"} <= set(defs)
    predict = defs["serving_default"]
    assert predict["method_name"] == "tensorflow/serving/predict"
    assert predict["inputs"]["x"] == {
        "dtype": "DT_FLOAT", "name": "x:0",
        "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False}}
    assert defs["tensorflow/serving/regress"]["method_name"] == "tensorflow/serving/regress"
    assert defs["tensorflow/serving/regress"]["inputs"]["inputs"]["dtype"] == "DT_STRING"
    assert get(server, "/v1/models/half_plus_three/versions/123/metadata").json() == meta
    assert get(server, "/v1/models/half_plus_three/labels/stable/metadata").json() == meta


# -- versions and labels -------------------------------------------------------------------------
def test_versions_and_labels_in_the_url(server):
    body = {"signature_name": "predict_x", "instances": ROWS}
    want = {"predictions": np.sum(ROWS, axis=1, dtype=np.float32).tolist()}
    for path in ("/v1/models/iris:predict", "/v1/models/iris/versions/3:predict",
                 "/v1/models/iris/labels/stable:predict", "/v1/models/iris/labels/canary:predict"):
        reply = post(server, path, body)
        assert reply.status_code == 200, (path, reply.text)
        np.testing.assert_allclose(reply.json()["predictions"], want["predictions"], rtol=1e-6)
    status = get(server, "/v1/models/iris/versions/3").json()["model_version_status"]
    assert [s["version"] for s in status] == ["3"]
    assert get(server, "/v1/models/iris/labels/stable").json()["model_version_status"] == status


@pytest.mark.parametrize("request_", [
    ("POST", "/v1/models/iris/versions/1:predict"),
    ("GET", "/v1/models/iris/versions/1"),
    ("GET", "/v1/models/iris/versions/1/metadata"),
    ("POST", "/v1/models/iris/versions/7:classify"),
    ("GET", "/v1/models/nope/metadata"),
])
def test_versions_not_served_are_404_with_an_error_body(server, request_):
    method, path = request_
    reply = requests.request(method, server.url + path, json={"examples": [{"x": ROWS[0]}]},
                             timeout=30)
    assert reply.status_code == 404
    assert reply.json().keys() == {"error"} and "not found" in reply.json()["error"]


# -- classify and regress ------------------------------------------------------------------------
def test_classify_with_context_and_several_classes(server):
    body = {"signature_name": "classify", "context": {"weight": 2.0},
            "examples": [{"x": ROWS[0]}, {"x": ROWS[1]}]}
    results = post(server, "/v1/models/iris:classify", body).json()["results"]
    scores = 2 * softmax(ROWS)
    assert [[label for label, _ in row] for row in results] == [models.IRIS_CLASSES] * 2
    np.testing.assert_allclose([[score for _, score in row] for row in results], scores,
                               rtol=1e-6)
    # serving_default is a classify signature too: naming none takes it, as TF Serving does.
    default = post(server, "/v1/models/iris:classify", {"examples": body["examples"]}).json()
    np.testing.assert_allclose([[s for _, s in row] for row in default["results"]],
                               softmax(ROWS), rtol=1e-6)


def test_regress_with_every_kind_of_feature(server):
    body = {"signature_name": "regress", "examples": [
        {"x": ROWS[0], "offset": 2, "tag": "abc"},
        {"x": ROWS[1], "tag": {"b64": base64.b64encode(b"\x00\xff").decode()}},
    ]}
    results = post(server, "/v1/models/iris/versions/3:regress", body).json()["results"]
    want = np.asarray(ROWS, dtype=np.float32) @ WEIGHTS + BIAS + np.array([2 + 3, 2])
    np.testing.assert_allclose(results, want, rtol=1e-6)


@pytest.mark.parametrize("path,body,message", [
    ("/v1/models/iris:regress", {"examples": [{"x": ROWS[0]}]},
     "is not a regress signature"),
    ("/v1/models/iris:classify", {"signature_name": "predict_x", "examples": [{"x": ROWS[0]}]},
     "is not a classify signature"),
    ("/v1/models/iris:classify", {"examples": []}, "'examples' must be a non-empty list"),
    ("/v1/models/iris:classify", {"examples": [{"x": [1, 2.5]}]}, "mixes"),
    ("/v1/models/iris:classify", {"examples": [{"x": [[1.0]]}]}, "got list"),
    ("/v1/models/iris:classify", {"examples": [{"x": None}]}, "got NoneType"),
    ("/v1/models/iris:classify", {"examples": [{"x": [1.0, 2.0]}]}, "cannot use this input"),
    ("/v1/models/iris:classify", {"context": 3, "examples": [{"x": ROWS[0]}]},
     "'context' must be an object"),
    ("/v1/models/tfm:classify", {"examples": [{"x": ROWS[0]}]}, "is not a classify signature"),
    # A 100 KB context in each of 2,000 examples would be 200 MB.
    ("/v1/models/iris:classify", {"context": {"pad": {"b64": "QUFB" * 34_000}},
                                  "examples": [{}] * 2000}, "would be over 64 MiB"),
])
def test_classify_and_regress_errors_are_400(server, path, body, message):
    reply = post(server, path, body)
    assert reply.status_code == 400, reply.text
    assert message in reply.json()["error"]


# -- KServe's sample ------------------------------------------------------------------------------
def test_kserve_flowers_sample_shape(server):
    """KServe's TensorFlow sample sends JPEG bytes in base64 and a key per instance."""
    red, blue = models.jpeg((230, 20, 20)), models.jpeg((20, 20, 230))
    body = {"instances": [{"image_bytes": {"b64": base64.b64encode(image).decode()}, "key": key}
                          for image, key in ((red, "   1"), (blue, "   2"))]}
    predictions = post(server, "/v1/models/flowers:predict", body).json()["predictions"]
    loaded = models.tf.saved_model.load(str(server.root / "flowers" / "1"))
    want = loaded.signatures["serving_default"](image_bytes=models.tf.constant([red, blue]),
                                                 key=models.tf.constant([b"   1", b"   2"]))
    assert [p["key"] for p in predictions] == ["   1", "   2"]
    assert [p["prediction"] for p in predictions] == want["prediction"].numpy().tolist() == [0, 2]
    np.testing.assert_allclose([p["scores"] for p in predictions], want["scores"].numpy(),
                               rtol=1e-6)


# -- formats -------------------------------------------------------------------------------------
def test_row_and_columnar_formats(server):
    rows = post(server, "/v1/models/half_plus_three:predict", {"instances": [1.0, 5.0]}).json()
    columns = post(server, "/v1/models/half_plus_three/versions/123:predict",
                   {"inputs": {"x": [1.0, 5.0]}}).json()
    assert rows == {"predictions": [3.5, 5.5]} and columns == {"outputs": [3.5, 5.5]}
    error = requests.post(server.url + "/v1/models/half_plus_three:predict", data=b"{",
                          timeout=30)
    assert error.status_code == 400 and error.json().keys() == {"error"}
