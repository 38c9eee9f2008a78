"""`--workers 2`: repository changes reach every worker before the call answers, the index
reads the same from each, a fetch happens once; a killed worker is replaced and loads what the
others serve before the server is ready again. Each request below is on a connection of its
own, which the kernel gives to either worker; models answer with the worker's pid."""

import os
import signal
import time
from pathlib import Path

import grpc
import pytest
import requests

from modelserver.protocol.proto import grpc_service_pb2 as pb
from modelserver.protocol.proto import grpc_service_pb2_grpc as pb_grpc
from modelserver.workers import merge_indexes

SCRIPT = str(Path(__file__).with_name("pid_repository.py"))
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}
FRESH = 50  # requests, each on a new connection


def model_folder(root: Path, name: str, load_seconds: float = 0) -> Path:
    (root / name).mkdir()
    (root / name / "pid.model").write_text(str(load_seconds))
    return root / name


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    model_folder(root, "steady")
    return root


@pytest.fixture(scope="module")
def server(launch, repository, source):
    return launch(SCRIPT, "--model_dir", str(repository), "--workers", "2",
                  "--allowed_storage_uris", f"{source.url}/models/")


def infer_fresh(server, name: str) -> tuple[set[int], set[int]]:
    """The statuses, and the pids that answered, of FRESH requests to `name`."""
    statuses, pids = set(), set()
    for _ in range(FRESH):
        reply = requests.post(f"{server.url}/v2/models/{name}/infer", json=BODY, timeout=30)
        statuses.add(reply.status_code)
        if reply.status_code == 200:
            pids.add(reply.json()["outputs"][0]["data"][0])
    return statuses, pids


def index_fresh(server, times: int = 20) -> list:
    answers = [requests.post(server.url + "/v2/repository/index", timeout=30).json()
               for _ in range(times)]
    assert all(answer == answers[0] for answer in answers), answers
    return answers[0]


def change(server, name: str, action: str, body=None) -> requests.Response:
    return requests.post(f"{server.url}/v2/repository/models/{name}/{action}", json=body,
                         timeout=120)


def test_a_load_and_an_unload_reach_every_worker(server, repository):
    model_folder(repository, "late")  # not there at start: no worker has loaded it
    assert infer_fresh(server, "late")[0] == {404}
    assert change(server, "late", "load").status_code == 200
    statuses, pids = infer_fresh(server, "late")
    assert statuses == {200} and len(pids) == 2
    assert {"name": "late", "version": "1", "state": "READY", "reason": ""} in index_fresh(server)

    assert change(server, "late", "unload").status_code == 200
    statuses, _ = infer_fresh(server, "late")
    assert statuses in ({404}, {503})  # never a mix, never a 200
    assert {"name": "late", "version": "1", "state": "UNAVAILABLE",
            "reason": "unloaded"} in index_fresh(server)


def test_grpc_changes_reach_every_worker_too(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="late"), timeout=60)
        assert infer_fresh(server, "late")[0] == {200}
        stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="late"),
                                   timeout=60)
    assert 200 not in infer_fresh(server, "late")[0]


def test_a_fetch_happens_once_for_every_worker(server, source):
    source.files["/models/fetched/pid.model"] = b"0"
    source.asked.clear()
    uri = f"{source.url}/models/fetched/pid.model"
    assert change(server, "fetched", "load", {"parameters": {"storage_uri": uri}}).status_code \
        == 200
    assert source.asked == ["/models/fetched/pid.model"]
    statuses, pids = infer_fresh(server, "fetched")
    assert statuses == {200} and len(pids) == 2


def test_a_failure_in_one_worker_is_the_calls_failure(server, repository):
    _, pids = infer_fresh(server, "steady")
    unlucky = min(pids)
    folder = model_folder(repository, "half")
    (folder / f"fail.{unlucky}").touch()  # its load fails in that worker only
    failed = change(server, "half", "load")
    assert failed.status_code == 500
    assert "told to fail" in failed.json()["error"] and "of 2; the others did it" in \
        failed.json()["error"]
    entry = next(e for e in index_fresh(server) if e["name"] == "half")
    assert entry["state"] == "UNAVAILABLE" and "told to fail" in entry["reason"]
    (folder / f"fail.{unlucky}").unlink()
    assert change(server, "half", "load").status_code == 200
    assert infer_fresh(server, "half")[0] == {200}


def test_a_killed_worker_is_replaced_and_serves_what_the_others_serve(server, repository):
    model_folder(repository, "journaled", load_seconds=3)  # slow: readiness waits for it
    assert change(server, "journaled", "load").status_code == 200
    assert change(server, "steady", "unload").status_code == 200  # on disk, but unloaded
    _, pids = infer_fresh(server, "journaled")
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)

    def ready() -> int | None:
        try:
            return requests.get(server.url + "/v2/health/ready", timeout=30).status_code
        except requests.ConnectionError:  # it was queued on the killed worker's socket
            return None

    deadline = time.monotonic() + 10
    while ready() != 503:  # until the parent has seen it die
        assert time.monotonic() < deadline, "readiness never turned false"
        time.sleep(0.05)
    deadline = time.monotonic() + 120
    while ready() != 200:
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.2)
    assert f"(pid {victim}) was killed by SIGKILL, perhaps out of memory; starting another" \
        in server.output()

    statuses, pids = infer_fresh(server, "journaled")
    assert statuses == {200} and len(pids) == 2 and victim not in pids
    assert 200 not in infer_fresh(server, "steady")[0]
    index = {entry["name"]: entry["state"] for entry in index_fresh(server)}
    assert index["journaled"] == "READY" and index["steady"] == "UNAVAILABLE"


def test_sigterm_stops_every_worker_and_exits_0(server):
    _, pids = infer_fresh(server, "journaled")
    assert server.stop() == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_indexes_merge_to_the_least_ready_state():
    ready = {"name": "m", "version": "2", "state": "READY", "reason": ""}
    loading = {"name": "m", "version": "", "state": "LOADING", "reason": ""}
    failed = {"name": "m", "version": "2", "state": "UNAVAILABLE", "reason": "load failed: x"}
    assert merge_indexes([[ready], [ready]]) == [ready]
    assert merge_indexes([[ready], [loading]]) == [loading]
    assert merge_indexes([[loading], [failed]]) == [failed]
    assert merge_indexes([[ready], []]) == [
        {"name": "m", "version": "", "state": "UNAVAILABLE", "reason": "not loaded"}]
    older = {**ready, "version": "1"}
    assert merge_indexes([[ready], [older]]) == [
        {**ready, "state": "UNAVAILABLE",
         "reason": "the workers serve different versions (1, 2)"}]
