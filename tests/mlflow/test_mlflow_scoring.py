"""MLflow's scoring protocol (/invocations) in-process: MLflowModel's route, run by the data
plane's runner as the REST transport runs it, for every model kind and input format, against the
pyfunc called directly."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import orjson
import pandas as pd
import pytest

from mlflowserver import MLflowModel
from mlflowserver.scoring import error_reply
from modelserver import ServingError
from modelserver.core.call import Call
from modelserver.core.runner import Runner
from modelserver.ops.metrics import ModelMetrics

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6], [5.1, 3.5, 1.4, 0.2]]


@pytest.fixture(scope="module")
def loaded(mlflow_models):
    models = {}
    for name, folder in mlflow_models.items():
        model = MLflowModel(name, str(folder))
        model.load()
        model.ready = True
        models[name] = model
    return models


def respond(model, body: bytes, content_type: str | None, method="POST", path="/invocations"):
    """(status, body, content type) as the REST transport would send it."""
    runner = Runner(model, ModelMetrics(), 100_000_000)
    route = MLflowModel.routes()[(method, path)]
    headers = {} if content_type is None else {"content-type": content_type}

    async def answer():
        try:
            return await runner.route(Call(path, method, path), route, body, headers)
        except ServingError as exc:
            return error_reply(exc)

    try:
        return asyncio.run(answer())
    finally:
        runner.close()


def call(model, body, content_type="application/json"):
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    status, payload, ctype = respond(model, body, content_type)
    assert ctype == "application/json"
    return status, orjson.loads(payload)


def test_iris_every_format(loaded):
    model = loaded["iris"]
    frame = pd.DataFrame(ROWS, columns=COLUMNS)
    expected = model.pyfunc.predict(frame).tolist()
    for body in ({"dataframe_split": frame.to_dict(orient="split")},
                 {"dataframe_split": {"columns": COLUMNS, "data": ROWS}},
                 {"dataframe_records": frame.to_dict(orient="records")},
                 {"instances": frame.to_dict(orient="records")},
                 {"inputs": frame.to_dict(orient="list")}):
        assert call(model, body) == (200, {"predictions": expected}), body
    assert call(model, frame.to_csv(index=False), "text/csv") == (200, {"predictions": expected})
    # CSV columns are read as the signature's types: integers become doubles.
    ints = pd.DataFrame([[7, 3, 5, 2]], columns=COLUMNS)
    assert call(model, ints.to_csv(index=False), "text/csv")[0] == 200


def test_tensor_model_instances_and_inputs(loaded):
    model = loaded["dot"]
    expected = model.pyfunc.predict(np.array(ROWS, dtype=np.float32))
    for body in ({"instances": ROWS}, {"inputs": ROWS}):
        status, reply = call(model, body)
        assert status == 200
        np.testing.assert_allclose(reply["predictions"], expected, rtol=1e-6)
    status, reply = call(model, {"inputs": [[1, 2, 3]]})
    assert status == 400 and "shape" in reply["error"]


def test_rows_as_lists_take_the_signature_columns(loaded):
    model = loaded["iris"]
    expected = model.pyfunc.predict(pd.DataFrame(ROWS, columns=COLUMNS)).tolist()
    assert call(model, {"instances": ROWS}) == (200, {"predictions": expected})
    status, reply = call(model, {"instances": [[1.0, 2.0, 3.0]]})
    assert status == 400
    assert "model 'iris' expects 4 features per row, got 3" in reply["error"]


def test_named_tensors_answer_records(loaded):
    model = loaded["named"]
    body = {"inputs": {"a": [[1.0, 2.0], [3.0, 4.5]], "b": [10, 20]}}
    expected = model.pyfunc.predict({"a": np.array([[1.0, 2.0], [3.0, 4.5]], np.float32),
                                     "b": np.array([10, 20])})
    assert call(model, body) == (200, {"predictions": expected.to_dict(orient="records")})


def test_params(loaded):
    model = loaded["scaled"]
    body = {"dataframe_records": [{"x": 1.0}, {"x": 2.5}]}
    assert call(model, body) == (200, {"predictions": [1.0, 2.5]})
    assert call(model, {**body, "params": {"scale": 2.0}}) == (200, {"predictions": [2.0, 5.0]})
    status, reply = call(model, {**body, "params": {"scale": "big"}})
    assert status == 400 and "scale" in reply["error"]
    status, reply = call(model, {**body, "params": [1]})
    assert status == 400 and "'params' must be a JSON object" in reply["error"]


def test_strings(loaded):
    model = loaded["words"]
    status, reply = call(model, {"dataframe_split": {"columns": ["text", "n"],
                                                     "data": [["ab", 2], ["c", 1]]}})
    assert status == 200
    assert reply == {"predictions": [{"shout": "AB!", "length": 4},
                                     {"shout": "C!", "length": 1}]}


def test_no_signature(loaded):
    model = loaded["nosig"]
    expected = model.pyfunc.predict(np.array(ROWS)).tolist()
    assert call(model, {"instances": ROWS}) == (200, {"predictions": expected})


@pytest.mark.parametrize(
    "body,content_type,status,message",
    [
        ({"rows": ROWS}, "application/json", 400, "exactly one of the input fields"),
        ({"instances": ROWS, "inputs": ROWS}, "application/json", 400,
         "exactly one of the input fields"),
        ([1, 2], "application/json", 400, "Received a list"),
        (b"\xff\xfe", "application/json", 400, "valid JSON"),
        ({"instances": ROWS}, "application/json; charset=latin-1", 415, "only supports UTF-8"),
        ({"instances": ROWS}, "application/xml", 415, "Got 'application/xml'"),
        (b"a;b\n1;2", "text/csv", 400, "missing sepal_length"),
        (b"\xff", "text/csv", 400, "UTF-8"),
        (b"PAR1", "application/vnd.apache.parquet", 400, "Failed to parse input"),
        ({"dataframe_split": {"columns": COLUMNS, "data": [["x", 1, 2, 3]]}},
         "application/json", 400, "Failed to convert column sepal_length"),
    ],
)
def test_bad_requests(loaded, body, content_type, status, message):
    got, reply = call(loaded["iris"], body, content_type)
    assert got == status, reply
    assert message in reply["error"]
    assert set(reply) == {"error", "error_code", "message"} and reply["message"] == reply["error"]
    assert reply["error_code"] in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE")


def test_model_bug_is_500_without_stack_trace(loaded):
    status, reply = call(loaded["broken"], {"dataframe_records": [{"x": 1.0}]})
    assert status == 500 and reply["error_code"] == "INTERNAL_ERROR"
    assert "RuntimeError: the model's own bug" in reply["error"]
    assert "Traceback" not in json.dumps(reply)


def test_missing_content_type_is_json(loaded):
    status, payload, _ = respond(
        loaded["iris"], json.dumps({"inputs": {c: [1.0] for c in COLUMNS}}).encode(), None)
    assert status == 200 and "predictions" in orjson.loads(payload)


# -- the routes --------------------------------------------------------------------------------
def test_routes_table():
    assert set(MLflowModel.routes()) == {("POST", "/invocations"), ("GET", "/ping"),
                                         ("GET", "/health"), ("GET", "/version")}
    assert MLflowModel.routes()[("POST", "/invocations")].inference
    assert not MLflowModel.routes()[("GET", "/ping")].inference


def test_ping_follows_readiness(loaded, mlflow_models):
    assert respond(loaded["iris"], b"", None, "GET", "/ping") == (200, b"\n",
                                                                  "application/json")
    loading = MLflowModel("iris", str(mlflow_models["iris"]))  # not loaded: not ready
    status, payload, _ = respond(loading, b"", None, "GET", "/ping")
    assert status == 503 and orjson.loads(payload)["error_code"] == "TEMPORARILY_UNAVAILABLE"


def test_unified_chat_format_is_passed_through_and_answered_unwrapped(loaded):
    body = {"messages": [{"role": "user", "content": "hello"}], "temperature": 0.1}
    assert call(loaded["chat"], body) == (200, {
        "choices": [{"message": {"role": "assistant", "content": "olleh"}}], "temperature": 0.1})


@pytest.mark.parametrize(
    "model,body,content_type",
    [
        ("iris", {"dataframe_split": {"columns": COLUMNS, "data": ROWS}}, "application/json"),
        ("iris", {"dataframe_records": [dict(zip(COLUMNS, r)) for r in ROWS]},
         "application/json"),
        ("iris", "sepal_length,sepal_width,petal_length,petal_width\n6.8,2.8,4.8,1.4\n",
         "text/csv"),
        ("dot", {"instances": ROWS}, "application/json"),
        ("dot", {"inputs": ROWS}, "application/json; charset=UTF-8"),
        ("named", {"inputs": {"a": [[1.0, 2.0]], "b": [3]}}, "application/json"),
        ("words", {"dataframe_records": [{"text": "ab", "n": 2}]}, "application/json"),
        ("scaled", {"dataframe_records": [{"x": 1.5}], "params": {"scale": 2.0}},
         "application/json"),
        ("nosig", {"instances": ROWS}, "application/json"),
        ("chat", {"messages": [{"role": "user", "content": "hi"}], "temperature": 0.2},
         "application/json"),
    ],
)
def test_same_answers_as_mlflows_own_scoring_server(loaded, model, body, content_type):
    """What `mlflow models serve` answers, from MLflow's own handler on the same model."""
    from mlflow.pyfunc.scoring_server import invocations as mlflow_invocations

    served = loaded[model]
    text = body if isinstance(body, str) else json.dumps(body)
    theirs = mlflow_invocations(text, content_type, served.pyfunc, served.input_schema)
    assert theirs.status == 200
    # float32 values are written as float32 here (10.550001), as float64 by MLflow
    # (10.55000114440918): the same numbers.
    status, ours = call(served, text, content_type)
    assert status == 200
    assert_same(ours, json.loads(theirs.response))


def assert_same(ours, theirs):
    """Equal JSON, numbers to float32 precision."""
    if isinstance(theirs, float):
        assert ours == pytest.approx(theirs, rel=1e-6)
    elif isinstance(theirs, dict):
        assert isinstance(ours, dict) and ours.keys() == theirs.keys(), (ours, theirs)
        for key in theirs:
            assert_same(ours[key], theirs[key])
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), (ours, theirs)
        for a, b in zip(ours, theirs):
            assert_same(a, b)
    else:
        assert ours == theirs and type(ours) is type(theirs), (ours, theirs)
