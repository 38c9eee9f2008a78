"""One request lifecycle in the data plane, whatever the transport: Triton's statistics with
Triton's meaning, per-stage metrics, and custom routes limited, timed and counted like v2."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families

SCRIPT = str(Path(__file__).resolve().parent / "custom_models.py")


@pytest.fixture(scope="module")
def server(launch):
    return launch(SCRIPT, "--access_log", "false")


def v2(server, model, values, parameters=None, timeout=30):
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [len(values)],
                        "data": list(values)}]}
    if parameters:
        body["parameters"] = parameters
    return requests.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=timeout)


def stats_of(server, model) -> dict:
    reply = requests.get(f"{server.url}/v2/models/{model}/stats", timeout=10)
    assert reply.status_code == 200, reply.text
    (stats,) = reply.json()["model_stats"]
    return stats


def counts(stats: dict) -> dict[str, int]:
    return {key: value["count"] for key, value in stats["inference_stats"].items()}


def metric(server, name: str, **labels) -> float:
    text = requests.get(server.url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_batched_requests_count_per_request_and_executions_per_call(server):
    before = stats_of(server, "batched")
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda i: v2(server, "batched", [float(i)]).status_code,
                                range(16)))
    assert replies == [200] * 16
    after = stats_of(server, "batched")
    grown = {k: counts(after)[k] - counts(before)[k] for k in counts(after)}
    # Triton counts compute_input, compute_infer, compute_output and queue once per request.
    assert grown["success"] == grown["compute_input"] == grown["compute_infer"] == \
        grown["compute_output"] == grown["queue"] == 16
    assert grown["fail"] == 0
    executions = after["execution_count"] - before["execution_count"]
    assert 1 <= executions < 16  # merged: fewer framework calls than requests
    assert after["inference_count"] - before["inference_count"] == 16  # rows
    batches = {b["batch_size"]: b["compute_infer"]["count"] for b in after["batch_stats"]}
    assert sum(batches.values()) == after["execution_count"]
    assert sum(size * n for size, n in batches.items()) == after["inference_count"]
    assert after["last_inference"] > 0


def test_lone_requests_count_queue_and_failures_count_apart(server):
    before = counts(stats_of(server, "echo"))
    assert v2(server, "echo", [1.0, 2.0]).status_code == 200
    bad = requests.post(f"{server.url}/v2/models/echo/infer", json={"inputs": []}, timeout=10)
    assert bad.status_code == 400
    after = counts(stats_of(server, "echo"))
    assert {k: after[k] - before[k] for k in ("success", "queue", "compute_input",
                                              "compute_infer", "compute_output", "fail")} == \
        {"success": 1, "queue": 1, "compute_input": 1, "compute_infer": 1, "compute_output": 1,
         "fail": 1}


def test_grpc_and_rest_requests_share_the_statistics(server):
    before = counts(stats_of(server, "echo"))
    client = grpcclient.InferenceServerClient(server.grpc_target)
    x = grpcclient.InferInput("x", [2], "FP32")
    x.set_data_from_numpy(np.ones(2, np.float32))
    client.infer("echo", [x])
    assert counts(stats_of(server, "echo"))["success"] == before["success"] + 1


def test_warmup_runs_before_ready_and_counts_nowhere(server):
    reply = v2(server, "warm", [1.0])
    assert reply.status_code == 200
    assert reply.json()["outputs"][0]["data"] == [3]  # two warmup calls came first
    stats = stats_of(server, "warm")
    assert counts(stats)["success"] == 1 and stats["execution_count"] == 1


def test_every_stage_has_a_histogram_per_model(server):
    names = ("preprocess", "queue", "inference", "postprocess")
    before = {n: metric(server, f"modelserver_{n}_duration_seconds_count", model="stats")
              for n in names}
    for _ in range(3):
        assert v2(server, "stats", [1.0, 2.0]).status_code == 200
    for name in names:
        assert metric(server, f"modelserver_{name}_duration_seconds_count",
                      model="stats") == before[name] + 3, name


def test_a_custom_route_is_an_inference_request(server):
    before = stats_of(server, "routed")
    reply = requests.post(server.url + "/double", json={"values": [1, 2.5]}, timeout=10)
    assert reply.status_code == 200 and reply.json() == [2.0, 5.0]
    after = stats_of(server, "routed")
    assert counts(after)["success"] == counts(before)["success"] + 1
    assert counts(after)["compute_infer"] == counts(before)["compute_infer"] + 1
    assert metric(server, "modelserver_requests_total", model="routed", protocol="/double",
                  status="200") >= 1
    assert metric(server, "modelserver_inference_duration_seconds_count", model="routed") >= 1
    bad = requests.post(server.url + "/double", data=b"nope", timeout=10)
    assert bad.status_code == 400 and "values" in bad.json()["error"]
    assert requests.get(server.url + "/double", timeout=10).status_code == 405


def test_custom_route_limits_are_v2s(launch):
    """Over the queue limit and past the deadline, a route answers what v2 answers."""
    server = launch(SCRIPT, "--access_log", "false", "--request_timeout_seconds", "0.3")
    route = requests.post(server.url + "/double", json={"values": [1], "sleep": 1}, timeout=10)
    infer = v2(server, "routed", [1.0], {"sleep": 1})
    assert route.status_code == infer.status_code == 504
    assert route.json()["error"] == infer.json()["error"] == \
        "model 'routed' did not answer within 0.3s"
    full = launch(SCRIPT, "--access_log", "false", "--max_queue_size", "0")
    route = requests.post(full.url + "/double", json={"values": [1]}, timeout=10)
    infer = v2(full, "routed", [1.0])
    assert route.status_code == infer.status_code == 503
    assert route.json()["error"] == infer.json()["error"]
    assert "its limit" in route.json()["error"]


def test_a_stuck_model_does_not_starve_the_others(launch):
    """A timed-out predict keeps its thread, but only one of its own model's; while its calls
    hang, the model (and so the server) says it is not ready, and answers 503 at once."""
    server = launch(SCRIPT, "--access_log", "false", "--request_timeout_seconds", "0.5")
    with ThreadPoolExecutor(16) as pool:
        stuck = [pool.submit(v2, server, "sleepy", [1.0], {"sleep": 4}) for _ in range(12)]
        assert all(f.result().status_code == 504 for f in stuck)
        assert v2(server, "routed", [1.0]).status_code == 200
        reply = v2(server, "sleepy", [1.0])
        assert reply.status_code == 503 and "without finishing" in reply.json()["error"]
        assert requests.get(server.url + "/v2/models/sleepy/ready", timeout=10).status_code == 503
        assert requests.get(server.url + "/v2/health/ready", timeout=10).status_code == 503
    deadline = time.monotonic() + 15  # the sleeps end: ready again
    while requests.get(server.url + "/v2/health/ready", timeout=10).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert v2(server, "sleepy", [1.0]).status_code == 200
