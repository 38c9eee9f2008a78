"""The MLflow runtime over HTTP: v1 and v2 against the pyfunc called directly, metadata from the
signature, 400s that name what was expected, MLflow's /invocations and /ping, startup errors.

One server serves a repository of every kind of model; another serves the example alone (for
/invocations, which serves one model)."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import yaml

from binary_offsets import check_every_offset

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mlflow-iris" / "model"
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6], [5.1, 3.5, 1.4, 0.2]]


def v1(server, model, body):
    return requests.post(f"{server.url}/v1/models/{model}:predict", json=body, timeout=30)


def v2(server, model, inputs, **extra):
    return requests.post(f"{server.url}/v2/models/{model}/infer",
                         json={"inputs": inputs, **extra}, timeout=30)


def tensor(data, name="input-0", datatype="FP64"):
    array = np.asarray(data)
    return {"name": name, "datatype": datatype, "shape": list(array.shape),
            "data": array.reshape(-1).tolist()}


def outputs_of(reply) -> dict[str, np.ndarray]:
    assert reply.status_code == 200, reply.text
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in reply.json()["outputs"]}


@pytest.fixture(scope="module")
def pyfuncs(mlflow_models):
    from mlflowserver.model import load_pyfunc

    return {name: load_pyfunc(folder) for name, folder in mlflow_models.items()}


@pytest.fixture(scope="module")
def server(launch, mlflow_models):
    return launch("-m", "mlflowserver", "--model_dir", str(mlflow_models.root))


@pytest.fixture(scope="module")
def iris_server(launch):
    return launch("-m", "mlflowserver", "--model_name", "iris", "--model_dir", str(EXAMPLE))


def test_invocations_serves_one_model_and_says_so_when_it_cannot(server, launch, tmp_path):
    """MLflow's /invocations has no model in its path: with several models served it is a 400
    naming them; with its one model not ready yet, a 503."""
    several = requests.post(server.url + "/invocations", json={"inputs": [[1.0]]}, timeout=10)
    assert several.status_code == 400 and "several models answer /invocations" in \
        several.json()["message"], several.text
    empty = launch("-m", "mlflowserver", "--model_dir", str(tmp_path), "--multi_model")
    none = requests.post(empty.url + "/invocations", json={"inputs": [[1.0]]}, timeout=10)
    assert none.status_code == 503 and "no model that answers /invocations is ready" in \
        none.json()["message"], none.text


def test_every_model_loads(server, mlflow_models):
    index = requests.post(server.url + "/v2/repository/index", timeout=10).json()
    assert {m["name"]: m["state"] for m in index} == {n: "READY" for n in mlflow_models}


def test_column_signature_by_name_v2_and_v1(server, pyfuncs):
    frame = pd.DataFrame(ROWS, columns=COLUMNS)
    expected = pyfuncs["iris"].predict(frame).tolist()
    columns = [tensor(frame[c].to_numpy(), name=c) for c in reversed(COLUMNS)]
    assert outputs_of(v2(server, "iris", columns))["predictions"].tolist() == expected
    records = v1(server, "iris", {"instances": frame.to_dict(orient="records")})
    assert records.json() == {"predictions": expected}
    # A [rows, columns] matrix takes the signature's columns in order; so do v1 lists.
    assert outputs_of(v2(server, "iris", [tensor(ROWS)]))["predictions"].tolist() == expected
    assert v1(server, "iris", {"instances": ROWS}).json() == {"predictions": expected}
    # FP32 and integer columns are cast to the signature's double, as MLflow casts JSON.
    ints = [tensor(np.array([7, 6, 5]), name=c, datatype="INT64") for c in COLUMNS]
    assert v2(server, "iris", ints).status_code == 200


def test_tensor_signature(server, pyfuncs):
    rows = np.array(ROWS, dtype=np.float32)
    expected = pyfuncs["dot"].predict(rows)
    out = outputs_of(v2(server, "dot", [tensor(rows, datatype="FP32")]))["predictions"]
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    # FP64 from JSON is cast to the signature's float32 before the model sees it.
    out64 = outputs_of(v2(server, "dot", [tensor(ROWS, name="anything")]))["predictions"]
    np.testing.assert_allclose(out64, expected, rtol=1e-6)
    np.testing.assert_allclose(v1(server, "dot", {"instances": ROWS}).json()["predictions"],
                               expected, rtol=1e-6)


def test_named_tensors_and_dataframe_output(server, pyfuncs):
    a = np.array([[1.0, 2.0], [3.0, 4.5]], dtype=np.float32)
    b = np.array([10, 20])
    expected = pyfuncs["named"].predict({"a": a, "b": b})
    out = outputs_of(v2(server, "named", [tensor(a, "a", "FP32"), tensor(b, "b", "INT64")]))
    assert out["total"].tolist() == expected["total"].tolist()
    assert out["twice"].tolist() == expected["twice"].tolist()
    # v1: one object per row; several outputs answer one object per row too.
    rows = [{"a": [1.0, 2.0], "b": 10}, {"a": [3.0, 4.5], "b": 20}]
    assert v1(server, "named", {"instances": rows}).json() == {
        "predictions": expected.to_dict(orient="records")}


def test_strings_in_and_out(server, pyfuncs):
    frame = pd.DataFrame({"text": ["ab", "héllo"], "n": [1, 3]})
    expected = pyfuncs["words"].predict(frame)
    inputs = [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["ab", "héllo"]},
              tensor([1, 3], "n", "INT64")]
    reply = v2(server, "words", inputs)
    out = {o["name"]: o for o in reply.json()["outputs"]}
    assert out["shout"]["datatype"] == "BYTES" and out["shout"]["data"] == ["AB!", "HÉLLO!"]
    assert out["length"]["data"] == expected["length"].tolist()


def test_params_from_v2_and_v1_parameters(server):
    inputs = [tensor([1.0, 2.0], "x")]
    assert outputs_of(v2(server, "scaled", inputs))["predictions"].tolist() == [1.0, 2.0]
    scaled = v2(server, "scaled", inputs, parameters={"scale": 3.0, "not_a_param": 1})
    assert outputs_of(scaled)["predictions"].tolist() == [3.0, 6.0]
    v1_reply = v1(server, "scaled", {"instances": [{"x": 2.0}], "parameters": {"scale": 0.5}})
    assert v1_reply.json() == {"predictions": [1.0]}


def test_unnamed_columns_take_one_matrix(server, pyfuncs):
    meta = requests.get(server.url + "/v2/models/rowsum", timeout=10).json()
    assert meta["inputs"] == [{"name": "input-0", "datatype": "BYTES", "shape": [-1, 2]}]
    expected = pyfuncs["rowsum"].predict(pd.DataFrame({0: [1.5, 2.0], 1: [2, 3]})).tolist()
    assert outputs_of(v2(server, "rowsum", [tensor([[1.5, 2], [2.0, 3]])]))[
        "predictions"].tolist() == expected
    assert v1(server, "rowsum", {"instances": [[1.5, 2], [2.0, 3]]}).json() == {
        "predictions": expected}
    fraction = v2(server, "rowsum", [tensor([[1.5, 2.5]])])
    assert fraction.status_code == 400 and "whole numbers" in fraction.json()["error"]


def test_no_signature(server, pyfuncs):
    expected = pyfuncs["nosig"].predict(np.array(ROWS)).tolist()
    assert outputs_of(v2(server, "nosig", [tensor(ROWS)]))["predictions"].tolist() == expected
    assert v1(server, "nosig", {"instances": ROWS}).json() == {"predictions": expected}
    assert requests.get(server.url + "/v2/models/nosig", timeout=10).json()["inputs"] == []


def test_mlserver_pd_request_with_str_column(server, pyfuncs):
    """A request as MLServer's PandasCodec builds it: `pd`, text columns marked `str`."""
    frame = pd.DataFrame({"text": ["hi", "héllo"], "n": [1, 3]})
    body = {"parameters": {"content_type": "pd"}, "inputs": [
        {"name": "text", "datatype": "BYTES", "shape": [2, 1], "data": ["hi", "héllo"],
         "parameters": {"content_type": "str"}},
        {"name": "n", "datatype": "INT64", "shape": [2, 1], "data": [1, 3]}]}
    reply = requests.post(f"{server.url}/v2/models/words/infer", json=body, timeout=30)
    outputs = {o["name"]: o for o in reply.json()["outputs"]}
    expected = pyfuncs["words"].predict(frame)
    assert outputs["shout"]["data"] == expected["shout"].tolist()
    assert outputs["length"]["data"] == expected["length"].tolist()
    assert {o["parameters"]["content_type"] for o in outputs.values()} == {"np"}


def test_metadata_from_the_input_example_without_a_signature(server, pyfuncs):
    """Each column's datatype from the example, so clients that build inputs from metadata
    send text as BYTES and integers as INT64."""
    meta = requests.get(server.url + "/v2/models/example", timeout=10).json()
    assert meta["inputs"] == [{"name": "city", "datatype": "BYTES", "shape": [-1]},
                              {"name": "rooms", "datatype": "INT64", "shape": [-1]},
                              {"name": "area", "datatype": "FP64", "shape": [-1]}]
    frame = pd.DataFrame({"city": ["Oslo", "Lyon"], "rooms": [2, 5], "area": [40.0, 90.5]})
    inputs = [{"name": "city", "datatype": "BYTES", "shape": [2], "data": ["Oslo", "Lyon"]},
              tensor([2, 5], "rooms", "INT64"), tensor([40.0, 90.5], "area")]
    np.testing.assert_allclose(outputs_of(v2(server, "example", inputs))["predictions"],
                               pyfuncs["example"].predict(frame))


def test_metadata_from_the_signature(server):
    def meta(name):
        return requests.get(f"{server.url}/v2/models/{name}", timeout=10).json()

    iris = meta("iris")
    assert iris["platform"] == "mlflow"
    assert iris["inputs"] == [{"name": c, "datatype": "FP64", "shape": [-1]} for c in COLUMNS]
    assert iris["outputs"] == [{"name": "predictions", "datatype": "INT64", "shape": [-1]}]
    assert meta("dot")["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta("named")["inputs"] == [{"name": "a", "datatype": "FP32", "shape": [-1, 2]},
                                       {"name": "b", "datatype": "INT64", "shape": [-1]}]
    assert meta("named")["outputs"] == [{"name": "total", "datatype": "FP64", "shape": [-1]},
                                        {"name": "twice", "datatype": "INT64", "shape": [-1]}]
    assert meta("words")["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]},
                                       {"name": "n", "datatype": "INT64", "shape": [-1]}]


@pytest.mark.parametrize(
    "model,inputs,message",
    [
        ("iris", [tensor([1.0], "sepal_length")],
         "model 'iris' expects inputs sepal_length, sepal_width, petal_length, petal_width; "
         "missing sepal_width, petal_length, petal_width"),
        ("iris", [tensor([1.0], c) for c in COLUMNS] + [tensor([1.0], "colour")],
         "unknown colour"),
        ("iris", [tensor([[1.0, 2.0, 3.0]])],
         "model 'iris' expects 4 features per row, got 3"),
        ("iris", [{"name": c, "datatype": "BYTES", "shape": [1], "data": ["x"]}
                  for c in COLUMNS], "input 'sepal_length' must be numbers of type FP64 (double)"),
        ("dot", [tensor([[1.0, 2.0, 3.0]])],
         "input 'input-0' has shape [1, 3]; the model expects [-1, 4]"),
        ("dot", [tensor([[True] * 4], datatype="BOOL")], "must be FP32 (float32), got BOOL"),
        ("named", [tensor([[1.0, 2.0]], "a")], "expects inputs a, b; missing b"),
        ("named", [tensor([[1.0, 2.0]], "a", "FP32"), tensor([1.5], "b")],
         "input 'b' must be whole numbers for INT64 (int64)"),
        ("words", [tensor([1.0], "text"), tensor([1], "n", "INT64")],
         "input 'text' must be strings (BYTES) for column type string"),
    ],
)
def test_inputs_that_do_not_fit_are_400(server, model, inputs, message):
    reply = v2(server, model, inputs)
    assert reply.status_code == 400 and message in reply.json()["error"], reply.text


def test_v1_bad_input_is_400_and_model_bug_is_500(server):
    reply = v1(server, "iris", {"instances": [{"sepal_length": 1.0}]})
    assert reply.status_code == 400 and "missing sepal_width" in reply.json()["error"]
    broken = v1(server, "broken", {"instances": [{"x": 1.0}]})
    assert broken.status_code == 500
    assert "RuntimeError: the model's own bug" in broken.json()["error"]
    assert "Traceback" not in broken.text


# -- MLflow's scoring protocol over HTTP -------------------------------------------------------
def invoke(server, body, content_type="application/json"):
    data = body if isinstance(body, (bytes, str)) else __import__("json").dumps(body)
    return requests.post(server.url + "/invocations", data=data,
                         headers={"Content-Type": content_type}, timeout=30)


def test_ping_health_and_version(iris_server):
    import mlflow

    for path in ("/ping", "/health"):
        reply = requests.get(iris_server.url + path, timeout=10)
        assert reply.status_code == 200 and reply.text == "\n"
    assert requests.get(iris_server.url + "/version", timeout=10).text == mlflow.__version__
    assert requests.post(iris_server.url + "/ping", timeout=10).status_code == 405


def test_invocations_in_every_format(iris_server, pyfuncs):
    frame = pd.DataFrame(ROWS, columns=COLUMNS)
    expected = {"predictions": pyfuncs["iris"].predict(frame).tolist()}
    bodies = [
        {"dataframe_split": frame.to_dict(orient="split")},
        {"dataframe_records": frame.to_dict(orient="records")},
        {"instances": frame.to_dict(orient="records")},
        {"inputs": {c: frame[c].tolist() for c in COLUMNS}},
    ]
    for body in bodies:
        reply = invoke(iris_server, body)
        assert reply.status_code == 200 and reply.json() == expected, (body, reply.text)
    csv = invoke(iris_server, frame.to_csv(index=False), "text/csv")
    assert csv.status_code == 200 and csv.json() == expected
    example = (EXAMPLE / "serving_input_example.json").read_bytes()
    assert invoke(iris_server, example, "application/json; charset=utf-8").status_code == 200


def test_invocations_errors_are_mlflow_shaped_without_stack_traces(iris_server):
    cases = [
        (invoke(iris_server, {"rows": ROWS}), 400, "exactly one of the input fields"),
        (invoke(iris_server, b"{not json"), 400, "valid JSON"),
        (invoke(iris_server, {"dataframe_split": {"columns": ["a"], "data": [[1]]}}), 400,
         "missing sepal_length"),
        (invoke(iris_server, "a,b\n1,2\n", "text/plain"), 415, "content types"),
        (invoke(iris_server, {"inputs": ROWS}, "application/json; format=pandas-split"), 415,
         "Unrecognized content type parameters: format"),
    ]
    for reply, status, message in cases:
        body = reply.json()
        assert reply.status_code == status, reply.text
        assert message in body["error"] and body["message"] == body["error"]
        assert body["error_code"] == "BAD_REQUEST"
        assert "stack_trace" not in body and "Traceback" not in reply.text


def _metric(server, name: str, **labels) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(server.url + "/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v
                                              for k, v in labels.items()))


def test_invocations_are_counted_like_v2(iris_server):
    stages = ("preprocess", "queue", "inference", "postprocess")
    before = {s: _metric(iris_server, f"modelserver_{s}_duration_seconds_count", model="iris")
              for s in stages}
    requests_before = _metric(iris_server, "modelserver_requests_total", model="iris",
                              protocol="/invocations", status="200")
    assert invoke(iris_server, {"inputs": {c: [1.0] for c in COLUMNS}}).status_code == 200
    assert _metric(iris_server, "modelserver_requests_total", model="iris",
                   protocol="/invocations", status="200") == requests_before + 1
    for stage in stages:
        assert _metric(iris_server, f"modelserver_{stage}_duration_seconds_count",
                       model="iris") == before[stage] + 1, stage
    stats = requests.get(iris_server.url + "/v2/models/iris/stats", timeout=10).json()
    assert stats["model_stats"][0]["inference_stats"]["success"]["count"] >= 1


@pytest.mark.parametrize("flags,status", [(("--max_queue_size", "0"), 503),
                                          (("--request_timeout_seconds", "0.000001"), 504)])
def test_invocations_limits_answer_as_v2_does(launch, flags, status):
    server = launch("-m", "mlflowserver", "--model_name", "iris", "--model_dir", str(EXAMPLE),
                    *flags)
    scoring = invoke(server, {"inputs": {c: [1.0] for c in COLUMNS}})
    infer = v2(server, "iris", [tensor([1.0], name=c) for c in COLUMNS])
    assert scoring.status_code == infer.status_code == status, (scoring.text, infer.text)
    assert scoring.json()["error"] == scoring.json()["message"] == infer.json()["error"]


# -- startup errors ---------------------------------------------------------------------------
def _mlmodel(folder: Path) -> dict:
    return yaml.safe_load((folder / "MLmodel").read_text())


def _write_mlmodel(folder: Path, meta: dict) -> None:
    (folder / "MLmodel").write_text(yaml.safe_dump(meta))


def _old_sklearn(folder: Path, models) -> None:
    """An MLflow model pickled by an old scikit-learn, whose module paths are gone."""
    shutil.copytree(models["nosig"], folder, dirs_exist_ok=True)
    meta = _mlmodel(folder)
    meta["flavors"]["sklearn"]["sklearn_version"] = "0.22.1"
    _write_mlmodel(folder, meta)
    (folder / "model.pkl").write_bytes(b"csklearn.linear_model.logistic\nLogisticRegression\n"
                                       b"(tR.")


def _needs_h2o(folder: Path, models) -> None:
    """A flavor whose framework no image here has."""
    _write_mlmodel(folder, {"flavors": {
        "python_function": {"loader_module": "mlflow.h2o", "data": "model.h2o"},
        "h2o": {"h2o_version": "3.46.0.6", "data": "model.h2o"}}, "mlflow_version": "2.9.2"})
    (folder / "model.h2o").mkdir()
    (folder / "model.h2o" / "h2o.yaml").write_text("model_file: model\n")


def _corrupt(folder: Path, models) -> None:
    shutil.copytree(models["nosig"], folder, dirs_exist_ok=True)
    (folder / "model.pkl").write_bytes(b"not a pickle")


def _corrupt_from_old_mlflow(folder: Path, models) -> None:
    _corrupt(folder, models)
    _write_mlmodel(folder, {**_mlmodel(folder), "mlflow_version": "2.9.2"})


@pytest.mark.parametrize(
    "setup,message",
    [
        (lambda d, m: None, "no MLflow model in"),
        (lambda d, m: (d / "model.pkl").write_bytes(b""), "expected an MLmodel file; found "
                                                          "model.pkl"),
        (_old_sklearn, "it refers to module 'sklearn.linear_model.logistic', which sklearn"),
        (_needs_h2o, "needs the Python package 'h2o'"),
        (_corrupt, "cannot load the MLflow model in"),
        (_corrupt_from_old_mlflow, "(saved with MLflow 2.9.2; this server runs "
                                   f"{mlflow.__version__}: an image built with `make "
                                   "build-mlflowserver FRAMEWORK_VERSION=2.9.2`"),
    ],
    ids=["empty", "no-mlmodel", "old-sklearn", "missing-package", "corrupt", "corrupt-2.9.2"],
)
def test_startup_errors_are_clean(launch, tmp_path, mlflow_models, setup, message):
    setup(tmp_path, mlflow_models)
    server = launch("-m", "mlflowserver", "--model_dir", str(tmp_path), wait=False)
    assert server.wait_exit() == 1
    output = server.output()
    assert message in output and str(tmp_path) in output, output
    assert "Traceback" not in output


def test_warmup_sends_the_input_example(launch, tmp_path, mlflow_models):
    """Zeros would not do here (the city column's encoder knows no empty name): warmup sends
    the input example MLflow saved with the model."""
    shutil.copytree(mlflow_models["example"], tmp_path / "example")
    (tmp_path / "example" / "settings.json").write_text('{"warmup": 2}')
    server = launch("-m", "mlflowserver", "--model_name", "example", "--model_dir",
                    str(tmp_path / "example"))
    assert "model 'example' warmed up (2 request(s))" in server.output(), server.output()
    stats = requests.get(f"{server.url}/v2/models/example/stats", timeout=10).json()
    assert stats["model_stats"][0]["inference_count"] == 0


def test_binary_tensors_at_every_offset(server):
    statuses = check_every_offset(server.url)
    assert statuses[("iris", "FP64")] == statuses[("named", "FP32")] == "200"


def test_kserve_payloads(server, pyfuncs):
    """KServe's mlflow sample: one FP32 input of shape [1] per column, `content_type: pd`;
    and its v1 records under `inputs`, its output asked for as `output-0`."""
    row = dict(zip(COLUMNS, ROWS[1]))
    expected = pyfuncs["iris"].predict(pd.DataFrame([row])).tolist()
    inputs = [{"name": name, "shape": [1], "datatype": "FP32", "data": [value]}
              for name, value in row.items()]
    reply = requests.post(f"{server.url}/v2/models/iris/infer", timeout=30, json={
        "parameters": {"content_type": "pd"}, "inputs": inputs,
        "outputs": [{"name": "output-0"}]})
    assert reply.status_code == 200, reply.text
    assert [(o["name"], o["data"]) for o in reply.json()["outputs"]] == [("output-0", expected)]
    assert v1(server, "iris", {"inputs": [row]}).json() == {"predictions": expected}
