"""A short soak in CI (`make soak` runs a long one): mixed traffic with hostile clients beside
(resets, oversized heads), no failures, memory back within 10% of where it started."""

import asyncio
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import soak  # noqa: E402

SECONDS = 20


def test_mixed_traffic_at_64_connections(launch):
    server = launch("-m", "sklearnserver", "--model_name", "iris",
                    "--model_dir", str(REPO / "examples" / "sklearn-iris"), "--access_log=false")
    tally = asyncio.run(soak.soak("127.0.0.1", server.http_port, server.proc.pid, SECONDS, 64))
    result = soak.report(tally, SECONDS, warmup=5)
    print(result)
    assert result["requests"] > 1000
    assert result["valid_failed"] == 0 and result["invalid_mishandled"] == 0
    assert set(result["statuses"]) == {200, 400, 404, 405}
    assert result["resets"] > 100 and result["huge_heads_refused"] > 10, result
    assert result["rss_end_mb"] <= result["rss_start_mb"] * 1.10, result
