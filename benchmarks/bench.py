"""`make bench`: serve the example iris model and load it, printing req/s and p50/p99; then one
scenario per row of RUNTIME_SCENARIOS (another runtime's example), next to the in-process time
of the same request's predict."""

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import loadgen  # noqa: E402
import grpcload  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IRIS_ROW = [6.8, 2.8, 4.8, 1.4]


@dataclass(frozen=True)
class RuntimeScenario:
    """Another runtime's example, served alone and loaded with one v2 request body."""

    module: str  # python -m <module>
    example: str  # folder under examples/
    model: str  # the served name
    body: bytes  # a v2 JSON infer request
    concurrency: tuple[int, ...] = (8, 64)


def _v2(name: str, rows: list[list[float]], datatype: str = "FP32") -> bytes:
    return json.dumps({"inputs": [{"name": name, "datatype": datatype,
                                   "shape": [len(rows), len(rows[0])],
                                   "data": [x for row in rows for x in row]}]}).encode()


# One row per runtime scenario; a new runtime appends its own.
RUNTIME_SCENARIOS = [
    RuntimeScenario("lgbserver", "lightgbm-iris", "iris", _v2("input-0", [IRIS_ROW], "FP64")),
]


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
                 module: str = "sklearnserver") -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--model_name", name,
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


def in_process_predict_us(scenario: RuntimeScenario) -> float:
    """The runtime's own decode-and-predict of the scenario's body in this process, the best of
    a few hundred calls: what the server adds is the rest of a request's time."""
    import timeit
    from importlib.metadata import entry_points

    import orjson

    from modelserver.protocol import v2json
    from modelserver.settings import resolve

    runtime = next(ep.load() for ep in entry_points(group="modelserver.runtimes")
                   if ep.value.split(":")[0] == scenario.module)
    model = runtime(scenario.model, str(REPO / "examples" / scenario.example))
    model.settings = resolve((runtime.defaults, "runtime"), ({"threads": 1}, "server"))
    model.load()
    predict = lambda: model.predict(v2json.decode_request(orjson.loads(scenario.body)))  # noqa
    return min(timeit.repeat(predict, number=200, repeat=5)) / 200 * 1e6


def run_runtime_scenarios(seconds: float) -> None:
    print(f"\n{'runtime scenario':<30}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>9}"
          f"{'predict us':>12}")
    for scenario in RUNTIME_SCENARIOS:
        port = free_port()
        server = start_server(port, REPO / "examples" / scenario.example, scenario.model,
                              module=scenario.module)
        try:
            alone = in_process_predict_us(scenario)
            url = f"http://127.0.0.1:{port}/v2/models/{scenario.model}/infer"
            for concurrency in scenario.concurrency:
                result = loadgen.run(url, scenario.body, concurrency, seconds)
                print(f"{f'{scenario.module} v2 c={concurrency}':<30}{result.rps:>10.0f}"
                      f"{result.p50_ms:>10.2f}{result.p99_ms:>10.2f}{result.errors:>9}"
                      f"{alone:>12.1f}", flush=True)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)


def report(name: str, result: loadgen.Result) -> None:
    print(f"{name:<30}{result.rps:>10.0f}{result.p50_ms:>10.2f}{result.p99_ms:>10.2f}"
          f"{result.errors:>9}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_SECONDS", 10)))
    parser.add_argument("--only-runtimes", action="store_true",
                        help="run only the RUNTIME_SCENARIOS")
    args = parser.parse_args()
    if args.only_runtimes:
        run_runtime_scenarios(args.seconds)
        return
    port, wide_port, grpc_port, delayed_grpc = free_port(), free_port(), free_port(), free_port()
    tmp = tempfile.TemporaryDirectory()
    iris = REPO / "examples" / "sklearn-iris"
    servers = [start_server(port, iris, "iris", grpc_port=grpc_port),
               start_server(wide_port, wide_model(Path(tmp.name)), "wide"),
               start_server(free_port(), iris, "iris", grpc_port=delayed_grpc,
                            flags=("--max_batch_delay_ms", "2"))]
    tool = "wrk" if shutil.which("wrk") else "python loadgen"
    grpc_tool = "h2load" if shutil.which("h2load") else "python grpcload"
    print(f"sklearnserver, 1 worker, {os.cpu_count()} CPUs, load from {tool} and {grpc_tool}, "
          f"{args.seconds:g}s per scenario\n")
    print(f"{'scenario':<30}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>9}")
    try:
        for name, url, body, concurrency, headers in scenarios(f"http://127.0.0.1:{port}",
                                                               f"http://127.0.0.1:{wide_port}"):
            result = loadgen.run(url, body, concurrency, args.seconds, headers=dict(headers))
            report(name, result)
        for name, target, method, request, concurrency in grpc_scenarios(
                f"127.0.0.1:{grpc_port}", f"127.0.0.1:{delayed_grpc}"):
            report(name, grpcload.run(target, method, request, concurrency, args.seconds))
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
        tmp.cleanup()
    run_runtime_scenarios(args.seconds)


if __name__ == "__main__":
    main()
