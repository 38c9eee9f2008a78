"""What platform teams rely on: metrics, access logs, limits, keep-alive, graceful shutdown."""

import json
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
SCRIPT = str(REPO / "tests" / "core" / "custom_models.py")
IRIS = str(REPO / "examples" / "sklearn-iris")
ROW = [[6.8, 2.8, 4.8, 1.4]]


def sleepy_body(seconds: float, values=(1.0,)) -> dict:
    return {"parameters": {"sleep": seconds},
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [len(values)],
                        "data": list(values)}]}


def samples(url: str) -> dict:
    reply = requests.get(url + "/metrics", timeout=10)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_prometheus_metrics_count_requests_batches_and_models(launch):
    server = launch("-m", "sklearnserver", "--model_name", "iris", "--model_dir", IRIS)
    for _ in range(5):
        requests.post(server.url + "/v1/models/iris:predict", json={"instances": ROW})
    requests.post(server.url + "/v1/models/iris:predict", json={"instances": [[1, 2]]})
    requests.post(server.url + "/v1/models/nope:predict", json={"instances": ROW})
    found = samples(server.url)
    assert value(found, "modelserver_requests_total", model="iris", protocol="v1",
                 status="200") == 5
    assert value(found, "modelserver_requests_total", model="iris", protocol="v1",
                 status="400") == 1
    assert value(found, "modelserver_requests_total", model="", protocol="v1", status="404") == 1
    assert value(found, "modelserver_request_duration_seconds_count", model="iris",
                 protocol="v1") == 6
    assert value(found, "modelserver_batch_rows_count", model="iris") >= 5
    assert value(found, "modelserver_inference_duration_seconds_count", model="iris") >= 5
    assert value(found, "modelserver_queue_duration_seconds_count", model="iris") >= 5
    assert value(found, "modelserver_models_loaded") == 1


def test_metrics_add_up_across_workers(launch):
    server = launch("-m", "sklearnserver", "--model_name", "iris", "--model_dir", IRIS,
                    "--workers", "2")
    for _ in range(40):  # a new connection each, so both workers answer some
        with requests.Session() as session:
            session.post(server.url + "/v1/models/iris:predict", json={"instances": ROW})
    # Each worker's counts reach the others within a snapshot period (0.1 s).
    deadline = time.monotonic() + 5
    while True:
        total = value(samples(server.url), "modelserver_requests_total", model="iris",
                      protocol="v1", status="200")
        if total == 40 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert total == 40


def test_access_log_lines_without_tensor_data(launch):
    server = launch("-m", "sklearnserver", "--model_name", "iris", "--model_dir", IRIS,
                    env={"AWS_SECRET_ACCESS_KEY": "do-not-log-this-secret"})
    requests.post(server.url + "/v1/models/iris:predict",
                  json={"instances": [[6.123456789, 2.8, 4.8, 1.4]]})
    time.sleep(0.2)
    output = server.output()
    assert "POST /v1/models/iris:predict 200" in output
    assert "6.123456789" not in output and "do-not-log-this-secret" not in output


def test_json_logs_and_access_log_off(launch):
    server = launch("-m", "sklearnserver", "--model_name", "iris", "--model_dir", IRIS,
                    "--log_format", "json")
    requests.post(server.url + "/v1/models/iris:predict", json={"instances": ROW})
    time.sleep(0.2)
    entries = [json.loads(line) for line in server.output().splitlines() if line.strip()]
    access = [e for e in entries if e["logger"] == "modelserver.access"]
    assert access and access[-1]["method"] == "POST" and access[-1]["status"] == 200
    assert access[-1]["model"] == "iris" and access[-1]["duration_ms"] > 0
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)

    quiet = launch("-m", "sklearnserver", "--model_name", "iris", "--model_dir", IRIS,
                   "--access_log=false")
    requests.post(quiet.url + "/v1/models/iris:predict", json={"instances": ROW})
    time.sleep(0.2)
    assert "/v1/models/iris:predict" not in quiet.output()


@pytest.fixture(scope="module")
def limited(launch):
    return launch(SCRIPT, "--max_request_bytes", "2000", "--max_tensor_elements", "100",
                  "--request_timeout_seconds", "0.5", "--max_queue_size", "2")


def test_body_over_the_limit_is_413(limited):
    reply = requests.post(limited.url + "/v2/models/echo/infer", data=b"x" * 5000)
    assert reply.status_code == 413
    assert reply.json() == {"error": "the request body is over the limit of 2000 bytes"}


def test_too_many_elements_is_400(limited):
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [101], "data": [0] * 101}]}
    reply = requests.post(limited.url + "/v2/models/echo/infer", json=body)
    assert reply.status_code == 400 and "over the limit of 100" in reply.json()["error"]


def test_slow_request_is_504_and_server_goes_on(limited):
    reply = requests.post(limited.url + "/v2/models/sleepy/infer", json=sleepy_body(2))
    assert reply.status_code == 504
    assert reply.json() == {"error": "model 'sleepy' did not answer within 0.5s"}
    assert requests.post(limited.url + "/v2/models/sleepy/infer", json=sleepy_body(0)).ok


def test_full_queue_is_503(limited):
    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(
            lambda _: requests.post(limited.url + "/v2/models/sleepy/infer",
                                    json=sleepy_body(0.3)), range(6)))
    statuses = [r.status_code for r in replies]
    assert 200 in statuses and 503 in statuses
    full = next(r for r in replies if r.status_code == 503)
    assert "requests waiting, its limit" in full.json()["error"]


def raw_get(sock: socket.socket, host: str) -> bytes:
    sock.sendall(f"GET /v2/health/live HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return sock.recv(4096)


def test_idle_connections_outlive_proxy_timeouts(launch, iris_server):
    host, port = "127.0.0.1", iris_server.http_port
    with socket.create_connection((host, port)) as sock:
        assert raw_get(sock, host).startswith(b"HTTP/1.1 200")
        time.sleep(6)  # past the 5 seconds that many servers keep an idle connection
        assert raw_get(sock, host).startswith(b"HTTP/1.1 200")
    short = launch("-m", "sklearnserver", "--model_dir", IRIS, "--keep_alive_timeout", "1")
    with socket.create_connection((host, short.http_port)) as sock:
        assert raw_get(sock, host).startswith(b"HTTP/1.1 200")
        time.sleep(2)
        sock.settimeout(5)
        assert sock.recv(100) == b""  # the server closed it


def test_sigterm_finishes_in_flight_requests_and_refuses_new_ones(launch):
    server = launch(SCRIPT)
    result = {}

    def slow_call():
        result["reply"] = requests.post(server.url + "/v2/models/sleepy/infer",
                                        json=sleepy_body(2, [7.0]), timeout=30)

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.5)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/v2/health/ready", timeout=2)
    caller.join(30)
    assert result["reply"].status_code == 200
    assert result["reply"].json()["outputs"][0]["data"] == [7.0]
    assert server.wait_exit(30) == 0
    # Access lines are written in batches; the last ones must not be lost at exit.
    assert "POST /v2/models/sleepy/infer 200" in server.output()
