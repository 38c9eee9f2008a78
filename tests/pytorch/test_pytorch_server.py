"""torchserver over REST, against torch called directly: the example exported program served on
its own, and a repository of an exported program with two inputs, TorchScript with and without
a signature file, and models that cannot load."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import torch

import torch_test_models as models
from binary_offsets import check_every_offset

# TorchScript is deprecated since torch 2.11, and still what most deployed models are.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "pytorch-iris"
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


def tensor_input(name, array, datatype):
    array = np.asarray(array)
    return {"name": name, "datatype": datatype, "shape": list(array.shape),
            "data": array.reshape(-1).tolist()}


# -- the example: an exported program on its own -----------------------------------------------
@pytest.fixture(scope="module")
def iris(launch):
    return launch("-m", "torchserver", "--model_name", "iris", "--model_dir", str(EXAMPLE))


@pytest.fixture(scope="module")
def iris_direct():
    module = torch.export.load(str(EXAMPLE / "model.pt2")).module()

    def call(rows):
        with torch.inference_mode():
            return {k: v.numpy() for k, v in module(torch.tensor(rows, dtype=torch.float32)).items()}

    return call


def test_metadata_comes_from_the_exported_program(iris):
    assert requests.get(iris.url + "/v2/models/iris").json() == {
        "name": "iris", "versions": ["1"], "platform": "pytorch_export",
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
                    {"name": "class", "datatype": "INT64", "shape": [-1]}],
    }


def test_v1_matches_torch(iris, iris_direct):
    want = iris_direct(ROWS)
    for body in ({"instances": ROWS}, {"inputs": ROWS}):
        predictions = v1(iris, "iris", body).json()["predictions"]
        assert [p["class"] for p in predictions] == want["class"].tolist() == [1, 1, 0]
        np.testing.assert_allclose([p["probabilities"] for p in predictions],
                                   want["probabilities"], rtol=1e-6)


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT32"])
def test_v2_matches_torch(iris, iris_direct, datatype):
    rows = np.array(ROWS) if datatype != "INT32" else np.array(ROWS).round()
    got = v2_outputs(v2(iris, "iris", {"inputs": [tensor_input("features", rows, datatype)]}))
    want = iris_direct(rows)
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-6)
    np.testing.assert_array_equal(got["class"], want["class"])


@pytest.mark.parametrize("inputs,message", [
    ([tensor_input("x", [ROWS[0]], "FP32")],
     "model 'iris' has no input 'x'; it takes 'features' (FP32 [-1, 4])"),
    ([tensor_input("features", [[1, 2, 3]], "FP32")],
     "input 'features' of model 'iris' expects shape [-1, 4], got [1, 3]"),
    ([tensor_input("features", ROWS[0], "FP32")], "expects shape [-1, 4], got [4]"),
    ([{"name": "features", "datatype": "BYTES", "shape": [1, 4], "data": list("abcd")}],
     "input 'features' of model 'iris' expects FP32 [-1, 4], got BYTES"),
    ([tensor_input("features", [[True] * 4], "BOOL")], "expects FP32 [-1, 4], got BOOL"),
    ([tensor_input("features", [ROWS[0]], "FP32"), tensor_input("extra", [1], "FP32")],
     "model 'iris' has no input 'extra'"),
])
def test_v2_inputs_that_do_not_fit_are_400(iris, inputs, message):
    assert message in error_of(v2(iris, "iris", {"inputs": inputs}))


def test_v1_bad_rows_are_400(iris):
    assert "expects shape [-1, 4], got [1, 5]" in error_of(
        v1(iris, "iris", {"instances": [[1, 2, 3, 4, 5]]}))
    assert "not a rectangular array" in error_of(
        v1(iris, "iris", {"instances": [[1, 2, 3, 4], [1]]}))


# -- a repository of models -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def repository_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("torch-repository")
    for name in ("two", "script", "embedder", "future", "state", "newer_script"):
        (root / name).mkdir()
    program = models.export_two_inputs(root / "two" / "model.pt2")
    traced = torch.jit.trace(models.TwoInputs().eval(), (torch.zeros(2, 4), torch.zeros(2)))
    traced.save(str(root / "script" / "model.pt"))
    embedder = models.script_embedder(root / "embedder")
    models.from_a_newer_torch(root / "two" / "model.pt2", root / "future" / "model.pt2")
    torch.save(models.TwoInputs().state_dict(), root / "state" / "model.pt")
    models.torchscript_from_a_newer_torch(root / "script" / "model.pt",
                                          root / "newer_script" / "model.pt")
    return root, program.module(), traced, embedder


@pytest.fixture(scope="module")
def repository(launch, repository_models):
    return launch("-m", "torchserver", "--model_dir", str(repository_models[0]))


def call(module, *arrays):
    with torch.inference_mode():
        result = module(*(torch.from_numpy(np.asarray(a)) for a in arrays))
    return [r.numpy() for r in result]


def test_exported_program_with_two_inputs(repository, repository_models):
    _, program, _, _ = repository_models
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    ids = np.array([1.0, 2.0, 3.0], np.float32)
    got = v2_outputs(v2(repository, "two", {"inputs": [
        tensor_input("x", x, "FP32"), tensor_input("ids", ids.astype(int), "INT64")]}))
    want = call(program, x, ids)
    np.testing.assert_allclose(got["output-0"], want[0], rtol=1e-6)
    np.testing.assert_allclose(got["output-1"], want[1], rtol=1e-6)
    meta = requests.get(repository.url + "/v2/models/two").json()
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]},
                              {"name": "ids", "datatype": "FP32", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "output-0", "datatype": "FP32", "shape": [-1]},
                               {"name": "output-1", "datatype": "FP32", "shape": [-1, 2]}]


def test_dynamic_dimensions_are_checked(repository):
    mismatch = {"inputs": [tensor_input("x", np.zeros((3, 4)), "FP32"),
                           tensor_input("ids", np.zeros(2), "FP32")]}
    assert "inputs 'x' and 'ids' of model 'two' must agree in size: dimension 0 of 'x' is 3, " \
        "dimension 0 of 'ids' is 2" in error_of(v2(repository, "two", mismatch))
    too_many = {"inputs": [tensor_input("x", np.zeros((65, 4)), "FP32"),
                           tensor_input("ids", np.zeros(65), "FP32")]}
    assert "input 'x' of model 'two': dimension 0 must be from 1 to 64, got 65" in error_of(
        v2(repository, "two", too_many))


def test_concurrent_requests_each_get_their_own_rows(repository, repository_models):
    _, program, _, _ = repository_models
    rng = np.random.default_rng(1)
    batches = [(rng.normal(size=(n, 4)).astype(np.float32), rng.normal(size=n).astype(np.float32))
               for n in range(1, 25)]

    def one(batch):
        x, ids = batch
        body = {"inputs": [tensor_input("x", x, "FP32"), tensor_input("ids", ids, "FP32")]}
        return v2_outputs(v2(repository, "two", body))

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(one, batches))
    for (x, ids), got in zip(batches, answers):
        np.testing.assert_allclose(got["output-0"], call(program, x, ids)[0], rtol=1e-5)


def test_torchscript_without_a_signature_file(repository, repository_models):
    _, _, traced, _ = repository_models
    x = np.array(ROWS)
    ids = np.array([1, 2, 3])
    got = v2_outputs(v2(repository, "script", {"inputs": [
        tensor_input("input-0", x, "FP64"), tensor_input("input-1", ids.astype(float), "FP64")]}))
    want = call(traced, x.astype(np.float32), ids.astype(np.float32))
    np.testing.assert_allclose(got["output-0"], want[0], rtol=1e-6)
    np.testing.assert_allclose(got["output-1"], want[1], rtol=1e-6)
    meta = requests.get(repository.url + "/v2/models/script").json()
    assert meta["platform"] == "pytorch_torchscript"
    assert [i["name"] for i in meta["inputs"]] == ["input-0", "input-1"]

    wrong_name = {"inputs": [tensor_input("x", x, "FP32"), tensor_input("ids", ids, "FP32")]}
    assert "model 'script' takes inputs 'input-0', 'input-1'; the request has 'x', 'ids'" in \
        error_of(v2(repository, "script", wrong_name))
    wrong_shape = {"inputs": [tensor_input("input-0", x[:, :3], "FP32"),
                              tensor_input("input-1", ids, "FP32")]}
    message = error_of(v2(repository, "script", wrong_shape))
    assert "model 'script' cannot use this input:" in message
    assert "mat1 and mat2 shapes cannot be multiplied (3x3 and 4x2)" in message
    text = {"inputs": [{"name": "input-0", "datatype": "BYTES", "shape": [1], "data": ["a"]},
                       tensor_input("input-1", [1], "FP32")]}
    assert "input 'input-0' of model 'script' must be numbers, got BYTES" in error_of(
        v2(repository, "script", text))


def test_torchscript_with_a_signature_file(repository, repository_models):
    _, _, _, embedder = repository_models
    tokens = np.array([[1, 2, 3, 4, 5], [15, 0, 0, 0, 1]])
    weights = np.array([[1, 0.5, 0.5, 0, 2], [1, 1, 1, 1, 1]], np.float32)
    want = call(embedder, tokens, weights)
    instances = [{"tokens": t.tolist(), "weights": w.tolist()} for t, w in zip(tokens, weights)]
    predictions = v1(repository, "embedder", {"instances": instances}).json()["predictions"]
    np.testing.assert_allclose([p["embedding"] for p in predictions], want[0], rtol=1e-6)
    assert [p["top"] for p in predictions] == want[1].tolist()
    meta = requests.get(repository.url + "/v2/models/embedder").json()
    assert meta["inputs"] == [{"name": "tokens", "datatype": "INT64", "shape": [-1, 5]},
                              {"name": "weights", "datatype": "FP32", "shape": [-1, 5]}]
    assert [o["name"] for o in meta["outputs"]] == ["embedding", "top"]

    fractions = {"inputs": [tensor_input("tokens", tokens + 0.5, "FP64"),
                            tensor_input("weights", weights, "FP32")]}
    assert "input 'tokens' of model 'embedder' expects INT64 [-1, 5]: integers" in error_of(
        v2(repository, "embedder", fractions))
    short = {"inputs": [tensor_input("tokens", tokens[:, :4], "INT64"),
                        tensor_input("weights", weights[:, :4], "FP32")]}
    assert "input 'tokens' of model 'embedder' expects shape [-1, 5], got [2, 4]" in error_of(
        v2(repository, "embedder", short))


@pytest.mark.parametrize("name,reasons", [
    ("future", ["model.pt2 was exported by torch 9.1.0 in export format",
                "this server runs torch " + torch.__version__, "export the model again"]),
    ("state", ["model.pt is not TorchScript but a torch.save() file (a state_dict"]),
    ("newer_script", ["could not load model.pt as TorchScript with torch " + torch.__version__,
                      "Attempted to read a PyTorch file with version 99"]),
])
def test_models_that_cannot_load_are_unavailable_with_the_reason(repository, name, reasons):
    index = {m["name"]: m for m in
             requests.post(repository.url + "/v2/repository/index", timeout=10).json()}
    assert index[name]["state"] == "UNAVAILABLE"
    for reason in reasons:
        assert reason in index[name]["reason"]
    assert {index[n]["state"] for n in ("two", "script", "embedder")} == {"READY"}


# -- startup failures -----------------------------------------------------------------------------
def _write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize("files,message", [
    ({"README.md": ""}, "no PyTorch model in {dir}: expected one torch.export archive (.pt2) "
                        "or TorchScript file (.pt, .pth); found README.md"),
    ({"model.pt": "", "model.pt2": ""}, "several model files in {dir}: model.pt, model.pt2; "
                                         "keep exactly one"),
    ({"model.mar": ""}, "TorchServe .mar archives are not served"),
    ({"model.pt": "", "signature.json": '{"inputs": [{"datatype": "FP32"}]}'},
     "{dir}/signature.json: each of 'inputs' needs a 'name'"),
])
def test_missing_or_ambiguous_model_stops_the_server(launch, tmp_path, files, message):
    server = launch("-m", "torchserver", "--model_dir", str(_write(tmp_path, files)), wait=False)
    assert server.wait_exit(60) == 1
    output = server.output()
    assert message.format(dir=tmp_path) in output
    assert "Traceback" not in output


def test_archive_from_another_torch_stops_the_server_cleanly(launch, tmp_path):
    models.export_two_inputs(tmp_path / "source.pt2")
    (tmp_path / "model").mkdir()
    models.from_a_newer_torch(tmp_path / "source.pt2", tmp_path / "model" / "model.pt2")
    server = launch("-m", "torchserver", "--model_dir", str(tmp_path / "model"), wait=False)
    assert server.wait_exit(60) == 1
    output = server.output()
    assert "model.pt2 was exported by torch 9.1.0" in output
    assert "Traceback" not in output


def test_corrupt_archive_reports_torch_reason_without_traceback(launch, tmp_path):
    models.export_two_inputs(tmp_path / "source.pt2")
    (tmp_path / "model").mkdir()
    models.rewrite_zip(tmp_path / "source.pt2", tmp_path / "model" / "model.pt2",
                       lambda name, data: b"{" if name.endswith("models/model.json") else data)
    server = launch("-m", "torchserver", "--model_dir", str(tmp_path / "model"), wait=False)
    assert server.wait_exit(60) == 1
    output = server.output()
    assert "could not load model.pt2:" in output
    assert "We ran into an error" not in output  # torch's generic words: the cause is shown
    assert "Traceback" not in output


def test_binary_tensors_at_every_offset(repository):
    statuses = check_every_offset(repository.url)
    assert statuses[("two", "FP32")] == "200"


def test_kserve_mnist_v2_sample_shape(launch, tmp_path):
    """KServe's PyTorch v2 sample: an `id`, one [1, 28, 28] FP32 input named `input-0` (its
    runtimes' name for the first input), nested data; the answer named `output-0`."""
    program = models.export_digits(tmp_path / "model.pt2")
    server = launch("-m", "torchserver", "--model_name", "mnist", "--model_dir", str(tmp_path))
    image = np.random.default_rng(3).random((1, 28, 28), dtype=np.float32)
    body = {"id": "d3b15cad-50a2-4eaf-80ce-8b0a428bd298", "inputs": [
        {"name": "input-0", "shape": [1, 28, 28], "datatype": "FP32", "data": image.tolist()}],
        "outputs": [{"name": "output-0"}]}
    reply = requests.post(server.url + "/v2/models/mnist/infer", json=body, timeout=30)
    assert reply.status_code == 200, reply.text
    with torch.inference_mode():
        digit = program.module()(torch.from_numpy(image)).tolist()
    assert reply.json()["id"] == body["id"]
    assert [(o["name"], o["data"]) for o in reply.json()["outputs"]] == [("output-0", digit)]
    twice = {"inputs": [body["inputs"][0], {**body["inputs"][0], "name": "images"}]}
    again = requests.post(server.url + "/v2/models/mnist/infer", json=twice, timeout=30)
    assert again.status_code == 400 and "got input 'images' twice" in again.json()["error"]
