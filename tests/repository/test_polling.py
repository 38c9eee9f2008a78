"""Repository polling: the folder decides what serves. New folders load, changed ones reload,
removed ones unload; nothing loads while it is still being written."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
IRIS = REPO / "examples" / "sklearn-iris" / "model.joblib"
ROW = [[6.8, 2.8, 4.8, 1.4]]
POLL = 0.3


def v1(server, name):
    return requests.post(f"{server.url}/v1/models/{name}:predict", json={"instances": ROW},
                         timeout=10)


def index(server) -> dict:
    reply = requests.post(f"{server.url}/v2/repository/index", timeout=10)
    return {entry["name"]: entry for entry in reply.json()}


def eventually(check, timeout: float = 15):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.1)


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "iris").mkdir()
    shutil.copy(IRIS, tmp_path / "iris" / "model.joblib")
    return tmp_path


@pytest.fixture
def server(launch, repo):
    return launch("-m", "sklearnserver", "--model_dir", str(repo),
                  "--repository_poll_seconds", str(POLL))


def test_new_changed_and_removed_folders(server, repo):
    assert v1(server, "iris").json() == {"predictions": [1]}
    (repo / "late").mkdir()
    shutil.copy(IRIS, repo / "late" / "model.joblib")
    eventually(lambda: v1(server, "late").status_code == 200)

    (repo / "iris" / "settings.json").write_text(json.dumps({"outputs": ["predict_proba"]}))
    eventually(lambda: isinstance(v1(server, "iris").json()["predictions"][0], list))

    shutil.rmtree(repo / "late")
    eventually(lambda: v1(server, "late").status_code == 404)
    assert "late" not in index(server)


def test_a_new_version_folder_replaces_the_served_one(server, repo):
    for version in ("1", "2"):
        (repo / "versioned" / version).mkdir(parents=True)
        shutil.copy(IRIS, repo / "versioned" / version / "model.joblib")
    eventually(lambda: index(server).get("versioned", {}).get("state") == "READY")
    assert index(server)["versioned"]["version"] == "2"
    (repo / "versioned" / "3").mkdir()
    shutil.copy(IRIS, repo / "versioned" / "3" / "model.joblib")
    eventually(lambda: index(server)["versioned"]["version"] == "3")
    # Every request over a fresh connection is answered meanwhile and after.
    assert all(v1(server, "versioned").status_code == 200 for _ in range(10))


def test_folders_being_written_wait(server, repo):
    """A download under way (its lock beside the folder) or a copy still growing is never
    loaded half-way."""
    (repo / "downloading").mkdir()
    shutil.copy(IRIS, repo / "downloading" / "model.joblib")
    lock = repo / ".modelstorage-lock-downloading"
    lock.write_text("")
    time.sleep(POLL * 5)
    assert v1(server, "downloading").status_code == 404
    lock.unlink()
    eventually(lambda: v1(server, "downloading").status_code == 200)

    data = IRIS.read_bytes()
    (repo / "copying").mkdir()
    target = repo / "copying" / "model.joblib"
    states = set()
    with open(target, "wb") as out:
        for start in range(0, len(data), len(data) // 6 + 1):
            out.write(data[start:start + len(data) // 6 + 1])
            out.flush()
            states.add(index(server).get("copying", {}).get("reason"))
            time.sleep(POLL / 2)
    eventually(lambda: v1(server, "copying").status_code == 200)
    assert not any(reason and reason.startswith("load failed") for reason in states), states


def test_the_api_does_not_change_a_polled_repository(server):
    for action in ("load", "unload"):
        reply = requests.post(f"{server.url}/v2/repository/models/iris/{action}", timeout=10)
        assert reply.status_code == 409 and "polls its model repository" in reply.json()["error"]
