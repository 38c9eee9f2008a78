"""Requests built with MLServer's codec classes (`mlserver.codecs`: request-level `pd` and `np`,
input-level `np`, `str`, `base64`, `datetime`) against our server over REST and gRPC, with the
answers compared with the models' own predictions in this process and with a real MLServer 1.7.1
serving the same model files.

MLServer lives in a virtualenv of its own (.cache/mlserver, made by setup.sh); the requests are
built and sent by mlserver_client.py running there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import requests

from ports import free_ports

REPO = Path(__file__).resolve().parents[2]

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import mlserver_models as data  # noqa: E402

MLSERVER = REPO / ".cache" / "mlserver" / "bin"
ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}

pytestmark = pytest.mark.skipif(not (MLSERVER / "mlserver").exists(),
                                reason="MLServer is not installed: run tests/mlserver/setup.sh")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A repository of scikit-learn models: the iris example (fit on a plain array), and
    DataFrame pipelines with a text column, a column of raw bytes and a datetime column."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

    root = tmp_path_factory.mktemp("codec-models")
    fitted = {"iris": joblib.load(REPO / "examples" / "sklearn-iris" / "model.joblib")}
    rng = np.random.default_rng(0)
    houses = pd.DataFrame({"city": rng.choice(["Lyon", "Oslo", "Porto"], 40),
                           "floor": rng.integers(0, 5, 40), "area": rng.uniform(20, 120, 40),
                           "rooms": rng.integers(1, 6, 40)})
    encode = ColumnTransformer([("city", OneHotEncoder(handle_unknown="ignore"), ["city"])],
                               remainder="passthrough")
    fitted["houses"] = Pipeline([("encode", encode), ("fit", LinearRegression())]).fit(
        houses, houses["area"] * 30 + (houses["city"] == "Oslo") * 100)
    blobs = pd.DataFrame({"blob": [bytes(range(n)) for n in range(1, 30)]})
    fitted["blobs"] = make_pipeline(FunctionTransformer(data.blob_lengths),
                                    LinearRegression()).fit(blobs, np.arange(1, 30) * 2.0)
    when = pd.DataFrame({"when": pd.date_range("1990-01-01", periods=30, freq="400D")})
    fitted["dates"] = make_pipeline(FunctionTransformer(data.days_since_2000),
                                    LinearRegression()).fit(when, np.arange(30.0))
    for name, model in fitted.items():
        (root / name).mkdir()
        joblib.dump(model, root / name / "model.joblib")
    return root, fitted


@pytest.fixture(scope="module")
def ours(launch, models):
    return launch("-m", "sklearnserver", "--model_dir", str(models[0]), env=ENV)


@pytest.fixture(scope="module")
def mlserver(models, tmp_path_factory):
    """MLServer 1.7.1 with its scikit-learn runtime on the same model files."""
    root, fitted = models
    folder = tmp_path_factory.mktemp("mlserver")
    http, grpc_port, metrics = free_ports(3)
    (folder / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": http, "grpc_port": grpc_port,
        "metrics_port": metrics, "parallel_workers": 0}))
    for name in fitted:
        (folder / name).mkdir()
        (folder / name / "model-settings.json").write_text(json.dumps({
            "name": name, "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": str(root / name / "model.joblib")}}))
    log = open(folder / "mlserver.log", "wb")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    proc = subprocess.Popen([str(MLSERVER / "mlserver"), "start", str(folder)], cwd=folder,
                            stdout=log, stderr=subprocess.STDOUT, env={**env, **ENV})
    url = f"http://127.0.0.1:{http}"
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if all(requests.get(f"{url}/v2/models/{m}/ready", timeout=2).status_code == 200
                       for m in fitted):
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError("MLServer did not start:\n"
                               + (folder / "mlserver.log").read_text(errors="replace")[-3000:])
        yield url, f"127.0.0.1:{grpc_port}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def answers(ours, mlserver) -> dict:
    run = subprocess.run([str(MLSERVER / "python"), str(HERE / "mlserver_client.py"),
                          ours.url, ours.grpc_target, *mlserver],
                         capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def expected(models, case: str) -> dict[str, np.ndarray]:
    fitted = models[1]
    iris, houses = fitted["iris"], fitted["houses"]
    return {
        "pd, plain-array model": {"predict": iris.predict(data.IRIS)},
        "pd, predict_proba": {"predict_proba": iris.predict_proba(data.IRIS)},
        "np request": {"predict": iris.predict(data.IRIS)},
        "np input, no request type": {"predict": iris.predict(data.IRIS)},
        "pd with str column": {"predict": houses.predict(data.HOUSES)},
        "str and np inputs, no request type": {"predict": houses.predict(data.HOUSES)},
        "pd with base64 column": {"predict": fitted["blobs"].predict(
            pd.DataFrame({"blob": data.BLOBS}))},
        "pd with datetime column": {"predict": fitted["dates"].predict(
            pd.DataFrame({"when": pd.to_datetime(data.WHEN)}))},
    }[case]


CASES = ["pd, plain-array model", "pd, predict_proba", "np request",
         "np input, no request type", "pd with str column",
         "str and np inputs, no request type", "pd with base64 column",
         "pd with datetime column"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("transport", ["ours", "ours grpc"])
def test_we_answer_every_codec_with_the_models_predictions(answers, models, case, transport):
    answer = answers[case][transport]
    assert answer["status"] == 200, answer
    for output in answer["outputs"]:
        want = expected(models, case)[output["name"]]
        np.testing.assert_allclose(np.reshape(output["data"], want.shape), want, rtol=1e-9)
        assert output["content_type"] == "np"  # as MLServer's runtimes mark their outputs


# What MLServer 1.7.1 itself refuses: several inputs without a content type go to its default
# `np` request codec, which takes one input only.
MLSERVER_REFUSES = {"str and np inputs, no request type": "only supports a single input tensor"}


@pytest.mark.parametrize("case", CASES)
def test_where_mlserver_answers_we_answer_the_same(answers, case):
    theirs, ours_answer = answers[case]["mlserver"], answers[case]["ours"]
    if case in MLSERVER_REFUSES:  # as expected; any other refusal fails the test
        assert theirs["status"] != 200 and MLSERVER_REFUSES[case] in theirs.get("error", "")
        return
    assert theirs["status"] == 200, theirs
    mine = {o["name"]: o for o in ours_answer["outputs"]}
    for output in theirs["outputs"]:
        np.testing.assert_allclose(mine[output["name"]]["data"], output["data"], rtol=1e-9)
        assert mine[output["name"]]["content_type"] == output["content_type"]


def test_bad_base64_and_datetime_are_400(ours):
    url = f"{ours.url}/v2/models/blobs/infer"
    bad = {"inputs": [{"name": "blob", "datatype": "BYTES", "shape": [1], "data": ["no!"],
                       "parameters": {"content_type": "base64"}}]}
    reply = requests.post(url, json=bad, timeout=10)
    assert reply.status_code == 400
    assert reply.json() == {"error": "input 'blob' has content type base64 but element 0 is "
                                     "not base64 text"}
    bad = {"inputs": [{"name": "when", "datatype": "BYTES", "shape": [1], "data": ["soon"],
                       "parameters": {"content_type": "datetime"}}]}
    reply = requests.post(f"{ours.url}/v2/models/dates/infer", json=bad, timeout=10)
    assert reply.status_code == 400 and "is not an ISO 8601 date" in reply.json()["error"]


def test_without_content_types_outputs_carry_none(ours):
    body = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4],
                        "data": data.IRIS[0].tolist()}]}
    outputs = requests.post(f"{ours.url}/v2/models/iris/infer", json=body,
                            timeout=10).json()["outputs"]
    assert "parameters" not in outputs[0]
