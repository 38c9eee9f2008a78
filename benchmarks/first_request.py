"""The first request after a model is ready, with and without warmup, for the examples whose
frameworks pay most on their first call (TensorFlow, PyTorch): `python benchmarks/first_request.py`.

Each example is served from a copy of its folder whose settings.json sets `warmup`; the time of
the first v2 request, then the median of the next ten, is printed per case."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench import IRIS_ROW, free_port, start_server  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = {"tfserver": "tensorflow-iris", "torchserver": "pytorch-iris"}


def request_ms(url: str, body: bytes) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=60) as reply:
        reply.read()
    return (time.perf_counter() - started) * 1000


def measure(runtime: str, folder: Path, warmup: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "iris"
        shutil.copytree(folder, model)
        (model / "settings.json").write_text(json.dumps({"warmup": warmup}))
        port = free_port()
        server = start_server(port, model, "iris", runtime=runtime)
        try:
            url = f"http://127.0.0.1:{port}/v2/models/iris"
            with urllib.request.urlopen(url, timeout=10) as reply:
                name = json.load(reply)["inputs"][0]["name"]
            body = json.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": [1, 4],
                                           "data": IRIS_ROW}]}).encode()
            first = request_ms(url + "/infer", body)
            later = statistics.median(request_ms(url + "/infer", body) for _ in range(10))
            return first, later
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    print(f"{'example':<24}{'warmup':>8}{'first ms':>10}{'next ms':>10}")
    for runtime, example in EXAMPLES.items():
        for warmup in (0, 1):
            first, later = measure(runtime, REPO / "examples" / example, warmup)
            print(f"{example:<24}{warmup:>8}{first:>10.1f}{later:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
