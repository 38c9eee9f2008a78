"""Process behaviour: readiness while loading, flags, workers, shutdown."""

import subprocess
import sys
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
SCRIPT = str(REPO / "tests" / "core" / "custom_models.py")
IRIS = str(REPO / "examples" / "sklearn-iris")
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}


def test_not_ready_until_the_model_has_loaded(launch):
    server = launch(SCRIPT, env={"SLOW_LOAD_SECONDS": "4"}, wait=False)
    server.wait_listening()
    assert requests.get(server.url + "/v2/health/live").status_code == 200
    not_ready = requests.get(server.url + "/v2/health/ready")
    assert not_ready.status_code == 503 and "not ready" in not_ready.json()["error"]
    model = requests.get(server.url + "/v2/models/slow/ready")
    assert model.status_code == 503
    infer = requests.post(server.url + "/v2/models/slow/infer", json=BODY)
    assert infer.status_code == 503
    assert infer.json() == {"error": "model 'slow' is not ready: it is loading"}
    server.wait_ready()
    assert requests.post(server.url + "/v2/models/slow/infer", json=BODY).status_code == 200


def test_help_lists_kserve_flags():
    result = subprocess.run([sys.executable, "-m", "sklearnserver", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for flag in ("--model_name", "--model_dir", "--http_port", "--grpc_port", "--workers"):
        assert flag in result.stdout


def test_kserve_style_args_and_unknown_flags(launch):
    server = launch("-m", "sklearnserver", "--model_name=iris", f"--model_dir={IRIS}",
                    "--enable_grpc=false", "--max_threads", "4", "--enable_docs_url=true")
    assert requests.get(server.url + "/v1/models/iris").status_code == 200
    assert "ignoring unknown arguments: --max_threads 4 --enable_docs_url=true" in server.output()


def test_model_name_from_environment(launch):
    server = launch("-m", "sklearnserver", "--model_dir", IRIS, env={"MODEL_NAME": "flower"})
    assert requests.get(server.url + "/v1/models").json() == {"models": ["flower"]}


def test_workers_share_the_port(launch):
    server = launch(SCRIPT, "--workers", "2", wait=False)
    server.wait_ready(timeout=120)
    pids = set()
    for _ in range(200):
        with requests.Session() as fresh:  # a new connection each time, so both get some
            reply = fresh.post(server.url + "/v2/models/pid/infer", json=BODY).json()
        pids.add(reply["outputs"][0]["data"][0])
        if len(pids) == 2:
            break
    assert len(pids) == 2


def test_sigterm_stops_cleanly(launch):
    server = launch("-m", "sklearnserver", "--model_dir", IRIS)
    assert server.stop() == 0
    assert "stopped (pid" in server.output()
