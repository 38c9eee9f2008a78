"""Multi-model serving: a repository folder of models, loaded and unloaded at run time."""

import json
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import joblib
import numpy as np
import pytest
import requests
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

REPO = Path(__file__).resolve().parents[2]
IRIS = REPO / "examples" / "sklearn-iris" / "model.joblib"
ROW = [[6.8, 2.8, 4.8, 1.4]]


def v1(server, name):
    return requests.post(f"{server.url}/v1/models/{name}:predict", json={"instances": ROW},
                         timeout=10)


def index(server, body=None):
    reply = requests.post(f"{server.url}/v2/repository/index", json=body, timeout=10)
    assert reply.status_code == 200, reply.text
    return {entry["name"]: entry for entry in reply.json()}


def repo_call(server, name, action, body=None):
    return requests.post(f"{server.url}/v2/repository/models/{name}/{action}", json=body,
                         timeout=60)


@pytest.fixture(scope="module")
def tree_model():
    features, labels = load_iris(return_X_y=True)
    return DecisionTreeClassifier(max_depth=2, random_state=0).fit(features, labels)


@pytest.fixture(scope="module")
def repository(tmp_path_factory, tree_model):
    root = tmp_path_factory.mktemp("repo")
    (root / "iris").mkdir()
    shutil.copy(IRIS, root / "iris" / "model.joblib")
    for version in ("1", "2", "10"):
        (root / "tree" / version).mkdir(parents=True)
        joblib.dump(tree_model, root / "tree" / version / "model.joblib")
    (root / "proba").mkdir()
    shutil.copy(IRIS, root / "proba" / "model.joblib")
    (root / "proba" / "settings.json").write_text(json.dumps({"outputs": ["predict_proba"]}))
    (root / "broken").mkdir()
    (root / "broken" / "model.joblib").write_bytes(b"not a pickle")
    (root / "typo").mkdir()
    shutil.copy(IRIS, root / "typo" / "model.joblib")
    (root / "typo" / "settings.json").write_text(json.dumps({"max_batch_sise": 8}))
    (root / "rows").mkdir()
    shutil.copy(IRIS, root / "rows" / "model.joblib")
    (root / "rows" / "settings.json").write_text(json.dumps({"max_batch_size": 4,
                                                             "max_batch_delay_ms": 2.5}))
    row = {"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": ROW[0]}
    for name, warmup in (("warmed", [{"inputs": [row]}] * 2),
                         ("coldfail", [{"inputs": [{**row, "shape": [1, 3],
                                                    "data": ROW[0][:3]}]}])):
        (root / name).mkdir()
        shutil.copy(IRIS, root / name / "model.joblib")
        (root / name / "settings.json").write_text(json.dumps({"warmup": warmup}))
    return root


@pytest.fixture(scope="module")
def server(launch, repository, tmp_path_factory):
    # Loads may fetch from the tests' temporary folders.
    return launch("-m", "sklearnserver", "--model_dir", str(repository),
                  "--allowed_storage_uris", str(tmp_path_factory.getbasetemp()))


def test_every_folder_is_a_model_and_loads_at_start(server):
    entries = index(server)
    assert set(entries) == {"iris", "tree", "proba", "broken", "typo", "rows", "warmed",
                            "coldfail"}
    assert entries["iris"] == {"name": "iris", "version": "1", "state": "READY", "reason": ""}
    assert entries["tree"]["version"] == "10" and entries["tree"]["state"] == "READY"
    assert entries["broken"]["state"] == "UNAVAILABLE"
    assert entries["broken"]["reason"].startswith("load failed:")
    assert set(index(server, {"ready": True})) == {"iris", "tree", "proba", "rows", "warmed"}
    # A model that failed to load does not hold the rest of the server back.
    assert requests.get(server.url + "/v2/health/ready").status_code == 200


def test_models_serve_with_their_settings_and_versions(server, tree_model):
    assert v1(server, "iris").json() == {"predictions": [1]}
    assert v1(server, "tree").json() == {"predictions": tree_model.predict(ROW).tolist()}
    proba = v1(server, "proba").json()["predictions"]
    assert len(proba[0]) == 3 and abs(sum(proba[0]) - 1) < 1e-9
    assert requests.get(server.url + "/v2/models/tree/versions/10/ready").status_code == 200
    assert requests.get(server.url + "/v2/models/tree/versions/2/ready").status_code == 404
    broken = v1(server, "broken")
    assert broken.status_code == 503 and "load failed" in broken.json()["error"]


def test_settings_json_reaches_the_model_and_typos_are_refused(server, repository):
    typo = index(server)["typo"]
    assert typo["state"] == "UNAVAILABLE"
    assert "unknown setting 'max_batch_sise'" in typo["reason"]
    assert str(repository / "typo" / "settings.json") in typo["reason"]
    config = requests.get(server.url + "/v2/models/rows/config", timeout=10).json()
    assert config["max_batch_size"] == 4
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 2500
    default = requests.get(server.url + "/v2/models/iris/config", timeout=10).json()
    assert default["max_batch_size"] == 128  # the runtime's own default


def test_warmup_requests_from_settings_json(server):
    cold = index(server)["coldfail"]
    assert cold["state"] == "UNAVAILABLE" and "warmup request 1 failed" in cold["reason"]
    assert "expects 4 features" in cold["reason"]
    assert v1(server, "warmed").json() == {"predictions": [1]}
    stats = requests.get(server.url + "/v2/models/warmed/stats", timeout=10).json()
    assert stats["model_stats"][0]["execution_count"] == 1  # warmup counts nowhere


def test_load_and_unload_at_run_time(server, repository):
    target = repository / "late"
    assert repo_call(server, "late", "load").status_code == 404
    target.mkdir()
    shutil.copy(IRIS, target / "model.joblib")
    assert repo_call(server, "late", "load").status_code == 200
    assert v1(server, "late").json() == {"predictions": [1]}
    assert index(server)["late"]["state"] == "READY"

    assert repo_call(server, "late", "unload", {}).status_code == 200
    entry = index(server)["late"]
    assert entry["state"] == "UNAVAILABLE" and entry["reason"] == "unloaded"
    gone = v1(server, "late")
    assert gone.status_code == 503 and gone.json() == {
        "error": "model 'late' is not ready: unloaded"}
    assert repo_call(server, "late", "unload").status_code == 404

    assert repo_call(server, "late", "load").status_code == 200  # and back again
    assert v1(server, "late").status_code == 200


def test_load_from_a_storage_uri(server, repository, tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(IRIS, source / "model.joblib")
    body = {"parameters": {"storage_uri": str(source)}}
    reply = repo_call(server, "fetched", "load", body)
    assert reply.status_code == 200, reply.text
    assert (repository / "fetched" / "model.joblib").is_file()
    assert v1(server, "fetched").json() == {"predictions": [1]}


@pytest.mark.parametrize("name,status", [
    ("..", 404), (".hidden", 400), ("a b", 400), ("%2e%2e", 400), ("..%2Fetc", 404),
    ("x" * 200, 400),
])
def test_hostile_names_are_refused(server, name, status):
    reply = repo_call(server, name, "load")
    assert reply.status_code == status, reply.text
    assert "error" in reply.json()


def test_bad_repository_bodies(server):
    bad = requests.post(f"{server.url}/v2/repository/index", data=b"[1]")
    assert bad.status_code == 400
    params = repo_call(server, "iris", "load", {"parameters": [1]})
    assert params.status_code == 400 and params.json() == {"error": "'parameters' must be an object"}
    method = requests.get(f"{server.url}/v2/repository/models/iris/load")
    assert method.status_code == 405


def test_unload_during_traffic_fails_nothing_but_clean_503s(server, repository):
    for name in ("busy", "steady"):
        (repository / name).mkdir(exist_ok=True)
        shutil.copy(IRIS, repository / name / "model.joblib")
        assert repo_call(server, name, "load").status_code == 200
    statuses = {"busy": [], "steady": []}
    stop = threading.Event()

    def hammer(name):
        with requests.Session() as session:
            while not stop.is_set():
                reply = session.post(f"{server.url}/v1/models/{name}:predict",
                                     json={"instances": ROW}, timeout=10)
                statuses[name].append(reply.status_code)

    with ThreadPoolExecutor(6) as pool:
        for name in ("busy", "busy", "busy", "steady", "steady", "steady"):
            pool.submit(hammer, name)
        time.sleep(0.5)
        assert repo_call(server, "busy", "unload").status_code == 200
        time.sleep(0.5)
        stop.set()
    assert set(statuses["steady"]) == {200}
    assert set(statuses["busy"]) <= {200, 503} and 503 in statuses["busy"]
    assert statuses["busy"].index(503) > 0  # it served before the unload


def test_reload_replaces_a_model_without_a_gap(server, repository, tree_model):
    (repository / "swap").mkdir()
    shutil.copy(IRIS, repository / "swap" / "model.joblib")
    assert repo_call(server, "swap", "load").status_code == 200
    joblib.dump(tree_model, repository / "swap" / "model.joblib")
    assert repo_call(server, "swap", "load").status_code == 200
    expected = tree_model.predict(np.array(ROW)).tolist()
    assert v1(server, "swap").json() == {"predictions": expected}


def test_empty_repository_with_multi_model_flag(launch, tmp_path):
    server = launch("-m", "sklearnserver", "--model_dir", str(tmp_path), "--multi_model")
    assert index(server) == {}
    (tmp_path / "iris").mkdir()
    shutil.copy(IRIS, tmp_path / "iris" / "model.joblib")
    assert repo_call(server, "iris", "load").status_code == 200
    assert v1(server, "iris").json() == {"predictions": [1]}


@pytest.mark.parametrize("name,action", [("other", "load"), ("iris", "load"), ("iris", "unload")])
def test_single_model_server_has_no_repository(iris_server, name, action):
    reply = repo_call(iris_server, name, action)
    assert reply.status_code == 400
    assert reply.json() == {"error": "this server has no model repository"}
    assert v1(iris_server, "iris").status_code == 200


def test_a_runtime_that_cannot_be_imported_leaves_the_others_serving(launch, tmp_path):
    # An installed runtime package whose module is gone: its entry point fails to load.
    site = tmp_path / "site"
    dist = site / "broken_runtime-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-runtime\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[modelserver.runtimes]\nbroken = no_such_runtime:Model\n")
    models = tmp_path / "models"
    (models / "iris").mkdir(parents=True)
    shutil.copy(IRIS, models / "iris" / "model.joblib")
    path = f"{site}:{os.environ.get('PYTHONPATH', '')}"
    server = launch("-m", "modelserver", "--model_dir", str(models), env={"PYTHONPATH": path})
    assert v1(server, "iris").json() == {"predictions": [1]}
    assert "runtime 'broken' (no_such_runtime:Model) does not import" in server.output()
