"""`make bench`: serve the example iris model and load it, printing req/s and p50/p99."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import loadgen  # noqa: E402
import grpcload  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IRIS_ROW = [6.8, 2.8, 4.8, 1.4]


# Other runtimes, each serving its example alone after the scikit-learn scenarios: (runtime
# module, example folder, model name, v2 request body), loaded at each RUNTIME_CONCURRENCY.
RUNTIME_SCENARIOS = [
    ("onnxserver", "examples/onnx-iris", "iris",
     json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4],
                             "data": IRIS_ROW}]}).encode()),
    ("lgbserver", "examples/lightgbm-iris", "iris",
     json.dumps({"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4],
                             "data": IRIS_ROW}]}).encode()),
]
RUNTIME_CONCURRENCY = (8, 64)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wide_model(folder: Path) -> Path:
    """A linear model over 100 features, so a 1000x100 request is mostly decode and encode."""
    import joblib
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    features = rng.random((200, 100))
    joblib.dump(LinearRegression().fit(features, features.sum(axis=1)), folder / "model.joblib")
    return folder


def start_server(port: int, model_dir: Path, name: str, workers: int = 1,
                 grpc_port: int | None = None, flags: tuple[str, ...] = (),
                 runtime: str = "sklearnserver") -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", runtime, "--model_name", name,
         "--model_dir", str(model_dir), "--http_port", str(port),
         "--grpc_port", str(grpc_port or free_port()),
         "--host", "127.0.0.1", "--workers", str(workers), *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1)
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become ready")


def scenarios(base: str, wide_base: str) -> list[tuple[str, str, bytes, int, dict]]:
    """(name, url, body, concurrency, headers) for loadgen."""
    v1 = json.dumps({"instances": [IRIS_ROW]}).encode()
    v2 = json.dumps({"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 4],
                                 "data": IRIS_ROW}]}).encode()
    big = np.random.default_rng(0).random((1000, 100), dtype=np.float32)
    v2_big = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1000, 100],
                                     "data": big.ravel().tolist()}]}).encode()
    # The binary tensor data extension: a JSON header, then the tensor's bytes.
    header = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1000, 100],
                                     "parameters": {"binary_data_size": big.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    binary = {"Inference-Header-Content-Length": str(len(header))}
    rows = [(f"v1 iris c={c}", f"{base}/v1/models/iris:predict", v1, c, {}) for c in (1, 8, 64)]
    rows += [(f"v2 iris c={c}", f"{base}/v2/models/iris/infer", v2, c, {}) for c in (1, 8, 64)]
    rows.append(("v2 1000x100 FP32 JSON c=8", f"{wide_base}/v2/models/wide/infer", v2_big, 8, {}))
    rows.append(("v2 1000x100 FP32 binary c=8", f"{wide_base}/v2/models/wide/infer",
                 header + big.tobytes(), 8, binary))
    return rows


def grpc_scenarios(target: str, delayed_target: str) -> list[tuple[str, str, str, bytes, int]]:
    """(name, target, method, serialized ModelInferRequest, concurrency) for grpcload: raw
    contents, as tritonclient and perf_analyzer send them. gRPC takes in new calls one at a
    time, so without a batch delay concurrent calls seldom meet in one batch; the last row
    shows the same load with --max_batch_delay_ms 2."""
    from modelserver.protocol.proto import grpc_service_pb2 as pb

    request = pb.ModelInferRequest(model_name="iris")
    request.inputs.add(name="input-0", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(np.array([IRIS_ROW], dtype=np.float32).tobytes())
    method = "/inference.GRPCInferenceService/ModelInfer"
    body = request.SerializeToString()
    rows = [(f"v2 gRPC iris c={c}", target, method, body, c) for c in (1, 64)]
    rows.append(("v2 gRPC iris c=64 delay 2ms", delayed_target, method, body, 64))
    return rows


def run_runtime_scenarios(seconds: float) -> None:
    """RUNTIME_SCENARIOS, one server at a time."""
    for runtime, folder, name, body in RUNTIME_SCENARIOS:
        port = free_port()
        server = start_server(port, REPO / folder, name, runtime=runtime)
        try:
            for concurrency in RUNTIME_CONCURRENCY:
                result = loadgen.run(f"http://127.0.0.1:{port}/v2/models/{name}/infer", body,
                                     concurrency, seconds, headers={})
                report(f"{runtime} v2 {name} c={concurrency}", result)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)


def report(name: str, result: loadgen.Result) -> None:
    print(f"{name:<30}{result.rps:>10.0f}{result.p50_ms:>10.2f}{result.p99_ms:>10.2f}"
          f"{result.errors:>9}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_SECONDS", 10)))
    args = parser.parse_args()
    port, wide_port, grpc_port, delayed_grpc = free_port(), free_port(), free_port(), free_port()
    tmp = tempfile.TemporaryDirectory()
    iris = REPO / "examples" / "sklearn-iris"
    servers = [start_server(port, iris, "iris", grpc_port=grpc_port),
               start_server(wide_port, wide_model(Path(tmp.name)), "wide"),
               start_server(free_port(), iris, "iris", grpc_port=delayed_grpc,
                            flags=("--max_batch_delay_ms", "2"))]
    tool = "wrk" if shutil.which("wrk") else "python loadgen"
    grpc_tool = "h2load" if shutil.which("h2load") else "python grpcload"
    others = ", ".join(dict.fromkeys(row[0] for row in RUNTIME_SCENARIOS))
    print(f"sklearnserver, then {others}; 1 worker, {os.cpu_count()} CPUs, load from {tool} and "
          f"{grpc_tool}, {args.seconds:g}s per scenario\n")
    print(f"{'scenario':<30}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>9}")
    try:
        for name, url, body, concurrency, headers in scenarios(f"http://127.0.0.1:{port}",
                                                               f"http://127.0.0.1:{wide_port}"):
            result = loadgen.run(url, body, concurrency, args.seconds, headers=dict(headers))
            report(name, result)
        for name, target, method, request, concurrency in grpc_scenarios(
                f"127.0.0.1:{grpc_port}", f"127.0.0.1:{delayed_grpc}"):
            report(name, grpcload.run(target, method, request, concurrency, args.seconds))
        run_runtime_scenarios(args.seconds)
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
        tmp.cleanup()


if __name__ == "__main__":
    main()
