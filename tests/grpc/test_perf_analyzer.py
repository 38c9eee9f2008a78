"""NVIDIA's perf_analyzer, run the way Triton and KServe users run it, against the examples
served with default flags and with batching off. It reads the model's config and statistics and
aborts if their counts disagree ("Server side statistics compute counts must be the same") or if
no version's queue count grew ("failed to find the requested model version").

Users run `perf_analyzer -m iris --concurrency-range 1:4 -i http|grpc -u HOST:PORT`; here each
measurement window is 1 s (not 5) and any stability is accepted, so that a loaded CI machine
neither takes minutes nor fails for noise: every window still checks the statistics."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PERF_ANALYZER = REPO / ".cache" / "perf_analyzer" / "bin" / "perf_analyzer"
EXAMPLES = REPO / "examples"

pytestmark = pytest.mark.skipif(
    not PERF_ANALYZER.exists(),
    reason="perf_analyzer is not installed (tests/grpc/setup.sh installs it from ../shared)")


@pytest.fixture(scope="module", params=[
    ("sklearnserver", "sklearn-iris", ()),
    ("sklearnserver", "sklearn-iris", ("--max_batch_size", "0")),
    ("xgbserver", "xgboost-iris", ()),
    ("xgbserver", "xgboost-iris", ("--max_batch_size", "0")),
], ids=["sklearn", "sklearn-unbatched", "xgboost", "xgboost-unbatched"])
def server(request, launch):
    runtime, example, flags = request.param
    return launch("-m", runtime, "--model_name", "iris", "--model_dir",
                  str(EXAMPLES / example), "--access_log", "false", *flags)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_measures_every_concurrency(server, protocol):
    url = server.url.removeprefix("http://") if protocol == "http" else server.grpc_target
    run = subprocess.run(
        [str(PERF_ANALYZER), "-m", "iris", "--concurrency-range", "1:4", "-i", protocol,
         "-u", url, "--measurement-interval", "1000", "--stability-percentage", "1000"],
        capture_output=True, text=True, timeout=240)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    for concurrency in range(1, 5):
        assert f"Concurrency: {concurrency}, throughput:" in output, output
    # The server's side of each request, from its statistics.
    assert "Server: " in output and "compute infer" in output, output
