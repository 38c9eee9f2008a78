"""onnxserver against ONNX Runtime called in this process: the example (Triton's layout, a
ZipMap) served on its own; a repository of a skl2onnx pipeline with a text column, a
torch.onnx.export model with a dynamic batch, hand-built graphs of every datatype and of open
shapes, version folders and models that cannot load; `python -m modelserver` hosting an ONNX
model beside a scikit-learn one. Each prediction is checked over KServe v1, v2 JSON, v2 binary
(tritonclient HTTP) and gRPC (tritonclient gRPC); perf_analyzer runs against the example."""

from __future__ import annotations

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import joblib
import numpy as np
import onnxruntime as ort
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import np_to_triton_dtype

import onnx_test_models as models

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "onnx-iris"
PERF_ANALYZER = REPO / ".cache" / "perf_analyzer" / "bin" / "perf_analyzer"
IRIS_ROWS = np.array([[6.8, 2.8, 4.8, 1.4], [5.1, 3.5, 1.4, 0.2], [7.7, 3.0, 6.1, 2.3]],
                     dtype=np.float32)


# -- talking to the server, and to ONNX Runtime directly ------------------------------------------
def datatype_of(array: np.ndarray) -> str:
    return "BYTES" if array.dtype.kind in "OSU" else np_to_triton_dtype(array.dtype)


def text(array: np.ndarray) -> np.ndarray:
    """Strings as str, whether they came as bytes (binary, gRPC) or str (JSON, in-process)."""
    return np.vectorize(lambda s: s.decode() if isinstance(s, bytes) else str(s),
                        otypes=[object])(array)


def v2_json(server, model: str, arrays: dict[str, np.ndarray],
            outputs: list[str] | None = None) -> dict[str, np.ndarray]:
    body: dict = {"inputs": [
        {"name": name, "datatype": datatype_of(a), "shape": list(a.shape),
         "data": (text(a) if a.dtype.kind in "OSU" else a).ravel().tolist()}
        for name, a in arrays.items()]}
    if outputs is not None:
        body["outputs"] = [{"name": name} for name in outputs]
    reply = requests.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=30)
    assert reply.status_code == 200, reply.text
    return {o["name"]: np.array(o["data"], dtype=object if o["datatype"] == "BYTES" else None)
            .reshape(o["shape"]) for o in reply.json()["outputs"]}


def v2_binary(server, model: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """tritonclient over HTTP: binary inputs and outputs, its default."""
    inputs = []
    for name, array in arrays.items():
        item = httpclient.InferInput(name, list(array.shape), datatype_of(array))
        item.set_data_from_numpy(array, binary_data=True)
        inputs.append(item)
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    result = client.infer(model, inputs)
    outputs = result.get_response()["outputs"]
    assert all("binary_data_size" in o["parameters"] for o in outputs)
    return {o["name"]: result.as_numpy(o["name"]) for o in outputs}


def grpc(server, model: str, arrays: dict[str, np.ndarray],
         outputs: list[str] | None = None) -> dict[str, np.ndarray]:
    inputs = []
    for name, array in arrays.items():
        item = grpcclient.InferInput(name, list(array.shape), datatype_of(array))
        item.set_data_from_numpy(array)
        inputs.append(item)
    wanted = None if outputs is None else [grpcclient.InferRequestedOutput(n) for n in outputs]
    result = grpcclient.InferenceServerClient(server.grpc_target).infer(model, inputs,
                                                                        outputs=wanted)
    return {o.name: result.as_numpy(o.name) for o in result.get_response().outputs}


def v1(server, model: str, body: dict) -> requests.Response:
    return requests.post(f"{server.url}/v1/models/{model}:predict", json=body, timeout=30)


def every_way(server, model: str, arrays: dict[str, np.ndarray]) -> dict[str, dict]:
    return {"v2 JSON": v2_json(server, model, arrays),
            "v2 binary": v2_binary(server, model, arrays),
            "gRPC": grpc(server, model, arrays)}


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray], how: str = "") -> None:
    assert set(got) == set(want), how
    for name, expected in want.items():
        if expected.dtype == object:
            np.testing.assert_array_equal(text(got[name]), text(expected), err_msg=how)
        else:
            assert np.asarray(got[name]).shape == expected.shape, (how, name)
            np.testing.assert_allclose(np.asarray(got[name], dtype=np.float64),
                                       expected.astype(np.float64), rtol=1e-6, err_msg=how)


def in_process(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """ONNX Runtime's own answer; a ZipMap's maps as a [rows, classes] matrix."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    answer = {}
    for name, value in zip(names, session.run(None, feeds)):
        if isinstance(value, list) and isinstance(value[0], dict):  # a ZipMap: a map per row
            value = np.array([[row[label] for label in sorted(row)] for row in value],
                             dtype=np.float32)
        answer[name] = value
    return answer


def error_of(reply: requests.Response, status: int = 400) -> str:
    assert reply.status_code == status, reply.text
    return reply.json()["error"]


# -- the example: Triton's layout, skl2onnx's ZipMap ----------------------------------------------
@pytest.fixture(scope="module")
def iris(launch):
    return launch("-m", "onnxserver", "--model_name", "iris", "--model_dir", str(EXAMPLE))


@pytest.fixture(scope="module")
def iris_direct():
    return in_process(EXAMPLE / "1" / "model.onnx", {"features": IRIS_ROWS})


def test_metadata_comes_from_the_graph(iris):
    assert requests.get(iris.url + "/v2/models/iris", timeout=10).json() == {
        "name": "iris", "versions": ["1"], "platform": "onnxruntime_onnx",
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "output_label", "datatype": "INT64", "shape": [-1]},
                    {"name": "output_probability", "datatype": "FP32", "shape": [-1, 3]}],
    }


def test_config_says_it_batches(iris):
    config = httpclient.InferenceServerClient(iris.url.removeprefix("http://")) \
        .get_model_config("iris")
    assert config["platform"] == "onnxruntime_onnx" and config["runtime"] == "onnxserver"
    assert config["max_batch_size"] == 32 and "dynamic_batching" in config
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == \
        [("features", "TYPE_FP32", [4])]
    assert [(o["name"], o["dims"]) for o in config["output"]] == \
        [("output_label", []), ("output_probability", [3])]
    assert grpcclient.InferenceServerClient(iris.grpc_target).get_model_config(
        "iris", as_json=True)["config"]["max_batch_size"] == 32


def test_every_protocol_matches_onnxruntime(iris, iris_direct):
    assert iris_direct["output_label"].tolist() == [1, 0, 2]
    for how, got in every_way(iris, "iris", {"features": IRIS_ROWS}).items():
        assert_same(got, iris_direct, how)
    predictions = v1(iris, "iris", {"instances": IRIS_ROWS.tolist()}).json()["predictions"]
    assert_same({"output_label": np.array([p["output_label"] for p in predictions]),
                 "output_probability": np.array([p["output_probability"] for p in predictions])},
                iris_direct, "v1")


def test_requested_outputs_are_the_only_ones_sent(iris, iris_direct):
    rows = {"features": IRIS_ROWS}
    probability = {"output_probability": iris_direct["output_probability"]}
    assert_same(v2_json(iris, "iris", rows, ["output_probability"]), probability, "v2 JSON")
    assert_same(grpc(iris, "iris", rows, ["output_label"]),
                {"output_label": iris_direct["output_label"]}, "gRPC")
    reply = requests.post(iris.url + "/v2/models/iris/infer", timeout=10, json={
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4],
                    "data": IRIS_ROWS[0].tolist()}], "outputs": [{"name": "nope"}]})
    assert "model 'iris' has no output 'nope'" in error_of(reply)


def test_statistics_count_every_protocol(iris):
    client = grpcclient.InferenceServerClient(iris.grpc_target)

    def stats():
        return client.get_inference_statistics("iris", as_json=True)["model_stats"][0]

    def count(s, key):
        return int(s["inference_stats"][key].get("count", 0))

    before = stats()
    every_way(iris, "iris", {"features": IRIS_ROWS})
    v1(iris, "iris", {"instances": [[1, 2, 3]]})  # three features: refused
    after = stats()
    assert count(after, "success") - count(before, "success") == 3
    assert count(after, "fail") - count(before, "fail") == 1
    assert count(after, "compute_infer") - count(before, "compute_infer") == 3
    assert int(after["inference_count"]) - int(before.get("inference_count", 0)) == 9
    rest = requests.get(iris.url + "/v2/models/iris/versions/1/stats", timeout=10).json()
    assert rest["model_stats"][0]["inference_stats"]["success"]["count"] == count(after, "success")


@pytest.mark.skipif(not PERF_ANALYZER.exists(), reason="perf_analyzer is not installed "
                    "(tests/grpc/setup.sh installs it from ../shared)")
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_runs_as_users_run_it(iris, protocol):
    url = iris.url.removeprefix("http://") if protocol == "http" else iris.grpc_target
    run = subprocess.run(
        [str(PERF_ANALYZER), "-m", "iris", "--concurrency-range", "1:2", "-i", protocol,
         "-u", url, "--measurement-interval", "1000", "--stability-percentage", "1000"],
        capture_output=True, text=True, timeout=240)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "Concurrency: 2, throughput:" in output, output


@pytest.mark.parametrize("inputs,message", [
    ([{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}],
     "model 'iris' has no input 'x'; it takes 'features' (FP32 [-1, 4])"),
    ([{"name": "features", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}],
     "input 'features' of model 'iris' expects shape [-1, 4], got [1, 3]"),
    ([{"name": "features", "datatype": "BYTES", "shape": [1, 4], "data": list("abcd")}],
     "input 'features' of model 'iris' expects FP32 [-1, 4], got BYTES"),
])
def test_inputs_that_do_not_fit_are_400(iris, inputs, message):
    reply = requests.post(iris.url + "/v2/models/iris/infer", json={"inputs": inputs}, timeout=10)
    assert message in error_of(reply)


# -- a repository of ONNX models -----------------------------------------------------------------
@pytest.fixture(scope="module")
def repository_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx-repository")
    models.sklearn_pipeline(root / "pipeline")
    models.sklearn_pipeline(root / "pipeline_tensor", zipmap=False)
    models.torch_classifier(root / "torch")
    models.typed_graph(root / "typed")
    models.open_shapes_graph(root / "open")
    models.adder(root / "versioned" / "1", 1.0)
    models.adder(root / "versioned" / "3", 3.0)  # the highest version is served
    models.adder(root / "threads", 0.5)
    (root / "threads" / "settings.json").write_text(
        json.dumps({"parameters": {"intra_op_thread_count": 3}}))
    models.adder(root / "bad_threads", 0.5)
    (root / "bad_threads" / "settings.json").write_text(
        json.dumps({"parameters": {"intra_op_thread_count": "many"}}))
    (root / "corrupt").mkdir()
    (root / "corrupt" / "model.onnx").write_bytes(b"not a protobuf")
    return root


@pytest.fixture(scope="module")
def repository(launch, repository_root):
    return launch("-m", "onnxserver", "--model_dir", str(repository_root))


def frame_columns(frame) -> dict[str, np.ndarray]:
    """skl2onnx's inputs for a frame: one [rows, 1] column each."""
    return {"size": frame[["size"]].to_numpy(np.float32),
            "weight": frame[["weight"]].to_numpy(np.float32),
            "city": frame[["city"]].to_numpy(object)}


def test_pipeline_with_a_text_column(repository, repository_root):
    frame = models.FRAME.iloc[:5].copy()
    frame.loc[4, "city"] = "rome"  # a city the encoder never saw
    columns = frame_columns(frame)
    want = in_process(repository_root / "pipeline" / "model.onnx", columns)
    for how, got in every_way(repository, "pipeline", columns).items():
        assert_same(got, want, how)
    # KServe v1 rows of named features; v2 columns given as lists ([n], not [n, 1]).
    predictions = v1(repository, "pipeline",
                     {"instances": frame.to_dict(orient="records")}).json()["predictions"]
    assert [p["output_label"] for p in predictions] == want["output_label"].tolist()
    np.testing.assert_allclose([p["output_probability"] for p in predictions],
                               want["output_probability"], rtol=1e-6)
    flat = {name: column.ravel() for name, column in columns.items()}
    assert_same(v2_json(repository, "pipeline", flat), want, "v2 JSON, columns as lists")


def test_zipmap_and_zipmap_false_give_the_same_tensor(repository, repository_root):
    columns = frame_columns(models.FRAME)
    meta = requests.get(repository.url + "/v2/models/pipeline", timeout=10).json()
    assert meta["inputs"] == [{"name": "size", "datatype": "FP32", "shape": [-1, 1]},
                              {"name": "weight", "datatype": "FP32", "shape": [-1, 1]},
                              {"name": "city", "datatype": "BYTES", "shape": [-1, 1]}]
    assert meta["outputs"][1] == {"name": "output_probability", "datatype": "FP32",
                                  "shape": [-1, 3]}
    zipped = v2_json(repository, "pipeline", columns)
    plain = v2_json(repository, "pipeline_tensor", columns)
    np.testing.assert_allclose(zipped["output_probability"], plain["probabilities"], rtol=1e-6)
    assert_same(plain, in_process(repository_root / "pipeline_tensor" / "model.onnx", columns))


def test_torch_export_with_a_dynamic_batch(repository, repository_root):
    assert (repository_root / "torch" / "model.onnx.data").is_file()  # weights kept apart
    meta = requests.get(repository.url + "/v2/models/torch", timeout=10).json()
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    assert [(o["name"], o["shape"]) for o in meta["outputs"]] == [("probabilities", [-1, 3]),
                                                                  ("label", [-1])]
    rows = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    want = in_process(repository_root / "torch" / "model.onnx", {"features": rows})
    for how, got in every_way(repository, "torch", {"features": rows}).items():
        assert_same(got, want, how)


def typed_rows(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.normal(size=(rows, 3)).astype(np.float32),
        "mask": rng.random((rows, 3)) > 0.5,
        "ids": rng.integers(-100, 100, rows).astype(np.int64),
        "word": np.array(rng.choice(["cat", "dog", "émeu"], rows), dtype=object),
        "half": rng.normal(size=(rows, 2)).astype(np.float16),
        "double": rng.normal(size=rows),
        "int8": rng.integers(-128, 127, rows).astype(np.int8),
        "int16": rng.integers(-30000, 30000, rows).astype(np.int16),
        "int32": rng.integers(-2**31, 2**31 - 1, rows).astype(np.int32),
        "uint8": rng.integers(0, 255, rows).astype(np.uint8),
        "uint16": rng.integers(0, 65535, rows).astype(np.uint16),
        "uint32": rng.integers(0, 2**32 - 1, rows).astype(np.uint32),
        "uint64": rng.integers(0, 2**53, rows).astype(np.uint64),
        "brain": rng.integers(-64, 64, (rows, 2)).astype(np.float32) / 4,  # exact in bfloat16
    }


def typed_direct(root: Path, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """ONNX Runtime's answer for all but the bfloat16 tensor, which numpy cannot feed it: its
    echo must be the values sent."""
    path = root / "typed" / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs() if o.name != "echo_brain"]
    high_halves = (arrays["brain"].view(np.uint32) >> 16).astype(np.uint16)  # bfloat16's bits
    brain = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(high_halves, 16)
    values = session.run(names, {**arrays, "brain": brain})
    return {**dict(zip(names, values)), "echo_brain": arrays["brain"]}


def test_a_graph_with_every_datatype(repository, repository_root):
    meta = requests.get(repository.url + "/v2/models/typed", timeout=10).json()
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [
        ("x", "FP32"), ("mask", "BOOL"), ("ids", "INT64"), ("word", "BYTES"), ("half", "FP16"),
        ("double", "FP64"), ("int8", "INT8"), ("int16", "INT16"), ("int32", "INT32"),
        ("uint8", "UINT8"), ("uint16", "UINT16"), ("uint32", "UINT32"), ("uint64", "UINT64"),
        ("brain", "FP32")]  # bfloat16 travels as FP32
    arrays = typed_rows(5)
    want = typed_direct(repository_root, arrays)
    assert want["word_id"].tolist() == [models.WORDS.get(w, -1) for w in arrays["word"]]
    for how, got in every_way(repository, "typed", arrays).items():
        assert_same(got, want, how)
        if how != "v2 JSON":  # binary and gRPC keep each output's datatype
            for name, value in want.items():
                assert got[name].dtype == value.dtype or value.dtype == object, (how, name)


def test_concurrent_requests_each_get_their_own_rows(repository, repository_root):
    batches = [typed_rows(rows, seed=rows) for rows in range(1, 17)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda arrays: grpc(repository, "typed", arrays), batches))
    for arrays, got in zip(batches, answers):
        assert_same(got, typed_direct(repository_root, arrays))


def test_dimensions_named_alike_must_agree(repository):
    arrays = typed_rows(3)
    arrays["ids"] = arrays["ids"][:2]
    reply = requests.post(repository.url + "/v2/models/typed/infer", timeout=10, json={
        "inputs": [{"name": n, "datatype": datatype_of(a), "shape": list(a.shape),
                    "data": text(a).ravel().tolist() if a.dtype == object else
                    a.ravel().tolist()} for n, a in arrays.items()]})
    assert "inputs 'x' and 'ids' of model 'typed' must agree in size: dimension 0 of 'x' is 3, " \
        "dimension 0 of 'ids' is 2" in error_of(reply)


def test_open_rank_scalars_and_outputs_that_are_not_tensors(repository, repository_root):
    meta = requests.get(repository.url + "/v2/models/open", timeout=10).json()
    assert meta["inputs"] == [{"name": "values", "datatype": "FP32", "shape": [-1]},
                              {"name": "scale", "datatype": "FP32", "shape": []}]
    assert meta["outputs"] == [{"name": "scaled", "datatype": "FP32", "shape": [-1]}]
    assert "output 'parts' is seq(tensor(float))" in repository.output()
    arrays = {"values": np.arange(6, dtype=np.float32).reshape(2, 3),
              "scale": np.array(1.5, dtype=np.float32)}
    want = in_process(repository_root / "open" / "model.onnx", arrays)
    for how, got in every_way(repository, "open", arrays).items():
        assert_same(got, {"scaled": want["scaled"]}, how)
    config = requests.get(repository.url + "/v2/models/open/config", timeout=10).json()
    assert config["max_batch_size"] == 0 and "dynamic_batching" not in config
    reply = requests.post(repository.url + "/v2/models/open/infer", timeout=10, json={
        "inputs": [{"name": "values", "datatype": "FP32", "shape": [1], "data": [1]},
                   {"name": "scale", "datatype": "FP32", "shape": [1], "data": [2]}]})
    assert "input 'scale' of model 'open' expects shape [], got [1]" in error_of(reply)


def test_version_folders_and_threads(repository):
    meta = requests.get(repository.url + "/v2/models/versioned", timeout=10).json()
    assert meta["versions"] == ["3"]
    got = v2_json(repository, "versioned", {"x": np.array([[1, 2]], dtype=np.float32)})
    np.testing.assert_array_equal(got["y"], [[4, 5]])
    assert "threads/model.onnx: inputs 'x' (FP32 [-1, 2]); outputs 'y' (FP32 [-1, 2]); 3 " \
        "intra-op thread(s)" in repository.output()


@pytest.mark.parametrize("name,reason", [
    ("corrupt", "could not load model.onnx with ONNX Runtime " + ort.__version__),
    ("bad_threads", "intra_op_thread_count must be a whole number >= 0"),
])
def test_models_that_cannot_load_are_unavailable_with_the_reason(repository, name, reason):
    index = {m["name"]: m for m in
             requests.post(repository.url + "/v2/repository/index", timeout=10).json()}
    assert index[name]["state"] == "UNAVAILABLE"
    assert reason in index[name]["reason"]
    assert index["typed"]["state"] == index["pipeline"]["state"] == "READY"


# -- beside another framework: python -m modelserver ---------------------------------------------
@pytest.fixture(scope="module")
def mixed_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    shutil.copytree(EXAMPLE / "1", root / "iris-onnx" / "1")
    shutil.copytree(REPO / "examples" / "sklearn-iris", root / "iris-sklearn",
                    ignore=shutil.ignore_patterns("*.py"))
    return root


def test_modelserver_hosts_onnx_beside_scikit_learn(launch, mixed_root, iris_direct):
    server = launch("-m", "modelserver", "--model_dir", str(mixed_root))
    index = requests.post(server.url + "/v2/repository/index", timeout=10).json()
    assert {(m["name"], m["version"], m["state"]) for m in index} == {
        ("iris-onnx", "1", "READY"), ("iris-sklearn", "1", "READY")}
    platforms = {name: requests.get(f"{server.url}/v2/models/{name}", timeout=10).json()
                 ["platform"] for name in ("iris-onnx", "iris-sklearn")}
    assert platforms["iris-onnx"] == "onnxruntime_onnx" and platforms["iris-sklearn"] != \
        "onnxruntime_onnx"
    for how, got in every_way(server, "iris-onnx", {"features": IRIS_ROWS}).items():
        assert_same(got, iris_direct, how)
    sklearn_model = joblib.load(mixed_root / "iris-sklearn" / "model.joblib")
    got = grpc(server, "iris-sklearn", {"input-0": IRIS_ROWS.astype(np.float64)})
    np.testing.assert_array_equal(got["predict"], sklearn_model.predict(IRIS_ROWS))


# -- startup failures -----------------------------------------------------------------------------
@pytest.mark.parametrize("files,message", [
    ({"README.md": b""}, "no ONNX model in {dir}: expected one .onnx file (model.onnx), in the "
                         "folder or in numbered version folders (1/model.onnx, ...); found "
                         "README.md"),
    ({"a.onnx": b"", "b.onnx": b""}, "several model files in {dir}: a.onnx, b.onnx; keep "
                                     "exactly one"),
    ({"model.onnx": b"\x08\x07garbage"}, "could not load model.onnx with ONNX Runtime"),
])
def test_missing_ambiguous_or_corrupt_model_stops_the_server(launch, tmp_path, files, message):
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    server = launch("-m", "onnxserver", "--model_dir", str(tmp_path), wait=False)
    assert server.wait_exit(60) == 1
    output = server.output()
    assert message.format(dir=tmp_path) in output
    assert "Traceback" not in output
