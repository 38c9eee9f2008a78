"""The OpenAPI document is served, covers every route, and survives schemathesis' fuzzing."""

import subprocess
import sys
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
IRIS = str(REPO / "examples" / "sklearn-iris")


@pytest.fixture(scope="module")
def server(launch):
    return launch("-m", "sklearnserver", "--model_name", "iris", "--model_dir", IRIS,
                  "--access_log=false")


def test_document_is_served_with_the_server_version(server):
    spec = requests.get(server.url + "/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["version"] == (REPO / "VERSION").read_text().strip()


def test_every_documented_route_exists(server):
    spec = requests.get(server.url + "/openapi.json").json()
    for path, item in spec["paths"].items():
        concrete = path.replace("{model_name}", "iris").replace("{model_version}", "1")
        for method in item:
            if method == "parameters":
                continue
            reply = requests.request(method.upper(), server.url + concrete, json={}, timeout=10)
            assert not reply.text.startswith('{"error":"no route'), f"{method} {path}"
            assert reply.status_code != 405, f"{method} {path}"


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(server, tmp_path):
    report = tmp_path / "report.json"
    run = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "run",
         server.url + "/openapi.json",
         "--checks", "not_a_server_error,status_code_conformance,response_schema_conformance,"
                     "content_type_conformance",
         "--max-examples", "40", "--seed", "7", "--report", "json",
         "--report-json-path", str(report)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-5000:]
    summary = run.stdout[run.stdout.rfind("Test cases:"):]
    generated = int(summary.split()[2])
    assert generated >= 200, summary
    assert requests.get(server.url + "/v2/health/live").json() == {"live": True}
    assert requests.post(server.url + "/v1/models/iris:predict",
                         json={"instances": [[6.8, 2.8, 4.8, 1.4]]}).json() == {
        "predictions": [1]}
