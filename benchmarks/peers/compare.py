"""`make bench-peers`: our sklearnserver next to MLServer and KServe's Python SDK, same models,
same load, same run.

Each peer gets its own virtual environment under .cache/peers/ (made once, kept while its
requirements are unchanged), with the scikit-learn of our .venv so the same joblib files load
everywhere. One server runs at a time, so none competes with another for the CPUs; every load
loop stops by itself after --seconds (env PEERS_SECONDS). Traffic goes to 127.0.0.1 only.

Every server gets the same request bodies: a v2 request has one FP32 input, which MLServer's
sklearn runtime takes as its one input and KServe's model takes as its first. MLServer serves no
v1 and no binary tensor extension; those cells read n/a.
"""

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
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
import loadgen  # noqa: E402

IRIS_ROW = [6.8, 2.8, 4.8, 1.4]
KSERVE_VERSION = "0.21.0"
MLSERVER_VERSION = "1.7.1"
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"


def peer_requirements() -> dict[str, list[str]]:
    import sklearn

    same_sklearn = f"scikit-learn=={sklearn.__version__}"
    return {
        # uvloop 0.22 breaks MLServer 1.7.1's inference workers ("There is no current event loop
        # in thread 'MainThread'", SeldonIO/MLServer#2286): no model ever loads.
        "mlserver": [f"mlserver=={MLSERVER_VERSION}", f"mlserver-sklearn=={MLSERVER_VERSION}",
                     "uvloop<0.22", same_sklearn],
        "kserve": [f"kserve=={KSERVE_VERSION}", same_sklearn],
    }


def ensure_venv(name: str, requirements: list[str]) -> Path:
    """.cache/peers/<name>, made only when missing or when its requirements changed."""
    venv = REPO / ".cache" / "peers" / name
    marker = venv / ".requirements"
    wanted = "\n".join(requirements) + "\n"
    if marker.is_file() and marker.read_text() == wanted:
        return venv
    print(f"installing {name} into {venv.relative_to(REPO)} ({' '.join(requirements)}) ...",
          flush=True)
    started = time.monotonic()
    base = getattr(sys, "_base_executable", None) or sys.executable
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH",
                                                            "PYTHONHOME")}
    subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True, env=env)
    log = venv / "install.log"
    with log.open("w") as out:
        done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install",
                               "--disable-pip-version-check", *requirements],
                              stdout=out, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        print(log.read_text()[-3000:], file=sys.stderr)
        raise RuntimeError(f"installing {name} failed; see {log}")
    marker.write_text(wanted)
    print(f"  done in {time.monotonic() - started:.0f}s", flush=True)
    return venv


# ---- models ------------------------------------------------------------------------------------

def make_models(root: Path) -> Path:
    """iris (the example), wide (100 features, for a 1000x100 request), rf (100 trees)."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LinearRegression

    models = root / "models"
    for name in ("iris", "wide", "rf"):
        (models / name).mkdir(parents=True)
    shutil.copy(REPO / "examples" / "sklearn-iris" / "model.joblib", models / "iris")
    rng = np.random.default_rng(0)
    features = rng.random((200, 100))
    joblib.dump(LinearRegression().fit(features, features.sum(axis=1)),
                models / "wide" / "model.joblib")
    x, y = load_iris(return_X_y=True)
    joblib.dump(RandomForestClassifier(n_estimators=100, random_state=0).fit(x, y),
                models / "rf" / "model.joblib")
    return models


# ---- servers -----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    label: str
    http: int
    grpc: int
    proc: subprocess.Popen
    log: Path
    ready_s: float = 0.0  # from the command to every model ready
    rss_mib: float = 0.0  # resident memory of its processes once ready, before any request

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # the server's own session: it and its workers
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def start(label: str, command: list[str], http: int, grpc: int, log: Path,
          cwd: Path = REPO) -> Server:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                start_new_session=True)
    server = Server(label, http, grpc, proc, log)
    started = time.monotonic()
    deadline = started + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if all(_status(f"http://127.0.0.1:{http}/v2/models/{m}/ready") == 200
               for m in ("iris", "wide", "rf")):
            server.ready_s = time.monotonic() - started
            time.sleep(1)  # settled: what it holds while it waits for requests
            server.rss_mib = rss_mib(proc.pid)
            return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"{label} did not get ready; last log lines:\n"
                       + "\n".join(log.read_text(errors="replace").splitlines()[-20:]))


def rss_mib(pid: int) -> float:
    """Resident memory of a process and all of its children (workers, inference pools)."""
    import psutil

    parent = psutil.Process(pid)
    processes = [parent, *parent.children(recursive=True)]
    return sum(p.memory_info().rss for p in processes if p.is_running()) / 2**20


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def ours(workers: int, models: Path, tmp: Path) -> Server:
    http, grpc = free_port(), free_port()
    return start(f"ours, {workers} worker{'s' * (workers > 1)}",
                 [sys.executable, "-m", "sklearnserver", "--model_dir", str(models),
                  "--http_port", str(http), "--grpc_port", str(grpc), "--host", "127.0.0.1",
                  "--workers", str(workers)], http, grpc, tmp / f"ours-{workers}.log")


FLOOR = "floor (bare ASGI, bare grpc.aio)"


def floor(tmp: Path) -> Server:
    """What the HTTP and gRPC stacks alone cost: a fixed answer to every request, no model."""
    http, grpc = free_port(), free_port()
    return start(FLOOR, [sys.executable, str(HERE.parent / "floors.py"), "both", str(http),
                         str(grpc)], http, grpc, tmp / "floor.log")


def kserve(venv: Path, models: Path, tmp: Path) -> Server:
    http, grpc = free_port(), free_port()
    return start(f"KServe {KSERVE_VERSION}",
                 [str(venv / "bin" / "python"), str(HERE / "kserve_sklearn.py"),
                  "--model_repository", str(models), "--http_port", str(http),
                  "--grpc_port", str(grpc), "--host", "127.0.0.1"], http, grpc,
                 tmp / "kserve.log")


def mlserver(venv: Path, models: Path, tmp: Path) -> Server:
    """MLServer wants a settings.json and a model-settings.json per model: written to a folder
    of their own, pointing at the same joblib files. Its other settings are its defaults."""
    http, grpc, metrics = free_port(), free_port(), free_port()
    folder = Path(tempfile.mkdtemp(prefix="mlserver-", dir=tmp))
    (folder / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": http, "grpc_port": grpc, "metrics_port": metrics}))
    for model in sorted(p for p in models.iterdir() if p.is_dir()):
        (folder / model.name).mkdir()
        (folder / model.name / "model-settings.json").write_text(json.dumps({
            "name": model.name, "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": str(model / "model.joblib")}}))
    return start(f"MLServer {MLSERVER_VERSION}", [str(venv / "bin" / "mlserver"), "start",
                                                  str(folder)], http, grpc, tmp / "mlserver.log",
                 cwd=folder)


# ---- scenarios ---------------------------------------------------------------------------------

@dataclass
class Scenario:
    name: str
    path: str                     # REST path, or "grpc"
    body: bytes
    concurrency: int
    headers: dict[str, str] = field(default_factory=dict)
    absent: str = ""              # what a failed first request means, e.g. "no v1"


def v2_json(name: str, array: np.ndarray) -> bytes:
    return json.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": list(array.shape),
                                   "data": array.ravel().tolist()}]}).encode()


def v2_binary(name: str, array: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """The binary tensor data extension: JSON header, then the raw little-endian tensor."""
    raw = array.astype("<f4").tobytes()
    head = json.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": list(array.shape),
                                   "parameters": {"binary_data_size": len(raw)}}],
                       "parameters": {"binary_data_output": True}}).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head)),
                        "Content-Type": "application/octet-stream"}


def grpc_request(model: str, rows: list[list[float]]) -> bytes | None:
    try:
        from modelserver.protocol.proto import grpc_service_pb2 as pb
    except ImportError:
        return None
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="input-0", datatype="FP32", shape=[len(rows), len(rows[0])])
    tensor.contents.fp32_contents.extend(float(v) for row in rows for v in row)
    return request.SerializeToString()


def scenarios() -> list[Scenario]:
    iris = np.array([IRIS_ROW], dtype=np.float32)
    v1 = json.dumps({"instances": [IRIS_ROW]}).encode()
    v2 = v2_json("input-0", iris)
    big = np.random.default_rng(0).random((1000, 100), dtype=np.float32)
    big_binary, binary_headers = v2_binary("input-0", big)
    rows = [Scenario(f"v1 iris c={c}", "/v1/models/iris:predict", v1, c, absent="no v1")
            for c in (1, 8, 64)]
    rows += [Scenario(f"v2 iris c={c}", "/v2/models/iris/infer", v2, c) for c in (1, 8, 64)]
    rows += [Scenario("v2 1000x100 FP32 JSON c=8", "/v2/models/wide/infer",
                      v2_json("input-0", big), 8),
             Scenario("v2 1000x100 FP32 binary c=8", "/v2/models/wide/infer", big_binary, 8,
                      binary_headers, absent="no binary extension"),
             Scenario("gRPC v2 iris c=64", "grpc", grpc_request("iris", [IRIS_ROW]) or b"", 64,
                      absent="no gRPC"),
             Scenario("RandomForest-100 v1 c=8", "/v1/models/rf:predict", v1, 8, absent="no v1"),
             Scenario("RandomForest-100 v2 c=8", "/v2/models/rf/infer", v2, 8)]
    return rows


@dataclass
class Cell:
    result: loadgen.Result | None = None
    why: str = ""                 # why there is no result

    @property
    def rps(self) -> float | None:
        return self.result.rps if self.result and self.result.requests else None


def probe(server: Server, scenario: Scenario) -> str:
    """'' if one request succeeds, else a short reason."""
    if scenario.path == "grpc":
        if not scenario.body:
            return "no gRPC client proto"
        import grpc

        try:
            with grpc.insecure_channel(f"127.0.0.1:{server.grpc}") as channel:
                channel.unary_unary(GRPC_INFER)(scenario.body, timeout=10)
            return ""
        except grpc.RpcError as err:
            return f"gRPC {err.code().name}"
    headers = {"Content-Type": "application/json", **scenario.headers}
    request = urllib.request.Request(f"http://127.0.0.1:{server.http}{scenario.path}",
                                     data=scenario.body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return ""
    except urllib.error.HTTPError as err:
        return f"HTTP {err.code}"
    except OSError as err:
        return type(err).__name__


def load(server: Server, scenario: Scenario, seconds: float, grpc_processes: int) -> Cell:
    why = probe(server, scenario)
    if why:
        return Cell(why=f"{scenario.absent}: {why}" if scenario.absent else why)
    if scenario.path == "grpc":
        import grpcload

        result = grpcload.run(f"127.0.0.1:{server.grpc}", GRPC_INFER, scenario.body,
                              scenario.concurrency, seconds, processes=grpc_processes)
    else:
        result = loadgen.run(f"http://127.0.0.1:{server.http}{scenario.path}", scenario.body,
                             scenario.concurrency, seconds, dict(scenario.headers))
    if result.requests and result.errors > result.requests // 100:
        return Cell(result, why=f"{result.errors} errors")
    return Cell(result)


def median(cells: list[Cell]) -> Cell:
    """The run with the median req/s (the lower middle one of an even count)."""
    measured = sorted((c for c in cells if c.rps is not None), key=lambda c: c.rps)
    return measured[(len(measured) - 1) // 2] if measured else cells[0]


def warm_up(server: Server) -> None:
    for path in ("/v2/models/iris/infer", "/v2/models/rf/infer"):
        loadgen.run(f"http://127.0.0.1:{server.http}{path}",
                    v2_json("input-0", np.array([IRIS_ROW], dtype=np.float32)), 8, 1)


# ---- report ------------------------------------------------------------------------------------

def cell_text(cell: Cell) -> str:
    if cell.rps is None:
        return f"n/a ({cell.why})" if cell.why else "n/a"
    r = cell.result
    text = f"{cell.rps:,.0f} · {r.p50_ms:.2f}/{r.p99_ms:.2f}"
    return text + (f" ({cell.why})" if cell.why else "")


def ratio(a: Cell, b: Cell) -> float | None:
    return a.rps / b.rps if a.rps and b.rps else None


def ratio_text(cells: list[Cell], peer: Cell) -> str:
    ratios = [ratio(c, peer) for c in cells]
    return " / ".join(f"{r:.1f}x" if r else "–" for r in ratios)


PRIOR = ("Earlier runs on this machine: KServe 0.21 v1 iris c=64 1,100-1,300 req/s, v2 iris "
         "760-925, gRPC 1,000-1,300, RandomForest v1 c=8 120-150; MLServer 1.7.1 v2 iris c=64 "
         "370-520.")


def report(rows: list[Scenario], labels: list[str], table: dict[str, list[Cell]],
           ours_labels: list[str], peers: list[str], started: dict[str, tuple[float, float]],
           rounds: int = 1) -> str:
    out = []
    header = ["scenario", *labels] + [f"ours/{p.split()[0]} (1w / 2w)" for p in peers]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    for i, scenario in enumerate(rows):
        cells = [cell_text(table[label][i]) for label in labels]
        ours_cells = [table[label][i] for label in ours_labels]
        ratios = [ratio_text(ours_cells, table[p][i]) for p in peers]
        out.append("| " + " | ".join([scenario.name, *cells, *ratios]) + " |")
    for what, at, unit in (("ready after start", 0, "s"), ("RSS idle", 1, "MiB")):
        cells = [f"{started[label][at]:.2f} {unit}" if label in started else "n/a"
                 for label in labels]
        out.append("| " + " | ".join([what, *cells, *[""] * len(peers)]) + " |")
    out.append("")
    out.append(f"Cells: req/s · p50/p99 ms{f', the median of {rounds} rounds' * (rounds > 1)}. Ratios: ours req/s over the peer's (or the floor's), "
               "with 1 and 2 workers; the peers run with their defaults (one process each; "
               "MLServer also runs inference in one pool worker process). The floor answers "
               "every request with a fixed reply: bare uvicorn (httptools, uvloop) for REST, a "
               "bare grpc.aio server on our grpcio for gRPC. Ready: from the command to every "
               "model ready; RSS: all of the server's processes, once ready.")
    out.append("")
    out.append(goals(rows, table, ours_labels, peers, started))
    out.append("")
    out.append(PRIOR)
    return "\n".join(out)


def goals(rows: list[Scenario], table: dict[str, list[Cell]], ours_labels: list[str],
          peers: list[str], started: dict[str, tuple[float, float]]) -> str:
    index = {s.name: i for i, s in enumerate(rows)}

    def peer(prefix: str) -> str | None:
        return next((p for p in peers if p.startswith(prefix)), None)

    lines = ["| goal | " + " | ".join(ours_labels) + " |",
             "|---|" + "---|" * len(ours_labels)]

    def throughput(scenario: str, other: str | None, factor: float) -> None:
        verdicts = []
        for label in ours_labels:
            a = table[label][index[scenario]]
            b = table[other][index[scenario]] if other else Cell(why="not run")
            r = ratio(a, b)
            why = (b.why or a.why).split(":")[0]
            verdicts.append(f"n/a ({why})" if r is None
                            else f"{r:.2f}x {'met' if r >= factor else 'NOT met'}")
        name = (other or "peer").split(" (")[0]
        lines.append(f"| {scenario}: >= {factor:g}x {name} | " + " | ".join(verdicts) + " |")

    def at_most(what: str, limit: float, unit: str, value) -> None:
        verdicts = [f"{value(label):.2f} {unit} {'met' if value(label) <= limit else 'NOT met'}"
                    if label in started else "n/a" for label in ours_labels]
        lines.append(f"| {what} <= {limit:g} {unit} | " + " | ".join(verdicts) + " |")

    throughput("v2 1000x100 FP32 JSON c=8", peer("MLServer"), 3)
    throughput("v2 1000x100 FP32 JSON c=8", peer("KServe"), 8)
    throughput("gRPC v2 iris c=64", peer("floor"), 0.85)
    throughput("v1 iris c=64", peer("floor"), 0.5)
    throughput("RandomForest-100 v1 c=8", peer("KServe"), 5)
    at_most("RSS idle", 160, "MiB", lambda label: started[label][1])
    at_most("ready after start", 1.2, "s", lambda label: started[label][0])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float,
                        default=float(os.environ.get("PEERS_SECONDS", 5)),
                        help="load per scenario (env PEERS_SECONDS, default 5)")
    parser.add_argument("--peers", default=os.environ.get("PEERS", "kserve,mlserver"),
                        help="comma-separated: kserve, mlserver (env PEERS)")
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("PEERS_ROUNDS", 1)),
                        help="run every server this many times, in turn, and report each "
                             "cell's median run (env PEERS_ROUNDS, default 1)")
    parser.add_argument("--grpc-processes", type=int, default=1,
                        help="client processes for the gRPC load (default 1)")
    parser.add_argument("--output", help="also write the table (markdown) to this file")
    args = parser.parse_args()
    wanted = [p for p in args.peers.split(",") if p]
    requirements = peer_requirements()
    venvs = {name: ensure_venv(name, requirements[name]) for name in wanted}

    rows = scenarios()
    tmp = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    models = make_models(tmp)
    launchers = [(lambda w=w: ours(w, models, tmp)) for w in (1, 2)]
    launchers.append(lambda: floor(tmp))
    if "kserve" in venvs:
        launchers.append(lambda: kserve(venvs["kserve"], models, tmp))
    if "mlserver" in venvs:
        launchers.append(lambda: mlserver(venvs["mlserver"], models, tmp))

    print(f"\n{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start, "
          f"{args.seconds:g}s per scenario, {args.rounds} round(s), HTTP load from "
          f"{'wrk' if shutil.which('wrk') else 'python loadgen'}, gRPC from "
          f"{'h2load' if shutil.which('h2load') else f'grpc.aio ({args.grpc_processes} process)'}"
          ". One server at a time.\n", flush=True)
    runs: dict[str, list[list[Cell]]] = {}
    starts: dict[str, list[tuple[float, float]]] = {}
    try:
        for round_ in range(1, args.rounds + 1):
            for launch in launchers:
                started = time.monotonic()
                try:
                    server = launch()
                except RuntimeError as err:
                    print(err, file=sys.stderr)
                    continue
                print(f"{server.label}{f' (round {round_})' if args.rounds > 1 else ''}: ready "
                      f"in {time.monotonic() - started:.2f}s, {server.rss_mib:.0f} MiB",
                      flush=True)
                starts.setdefault(server.label, []).append((server.ready_s, server.rss_mib))
                try:
                    warm_up(server)
                    cells = []
                    for scenario in rows:
                        cell = load(server, scenario, args.seconds, args.grpc_processes)
                        print(f"  {scenario.name:<32} {cell_text(cell)}", flush=True)
                        cells.append(cell)
                finally:
                    server.stop()
                runs.setdefault(server.label, []).append(cells)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end", flush=True)

    labels = list(runs)
    table = {label: [median(list(cells)) for cells in zip(*runs[label])] for label in labels}
    ours_labels = [label for label in labels if label.startswith("ours")]
    peers = [label for label in labels if not label.startswith("ours")]
    started = {label: tuple(float(np.median(v)) for v in zip(*values))
               for label, values in starts.items() if label != FLOOR}
    text = report(rows, labels, table, ours_labels, peers, started, args.rounds)
    print("\n" + text)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
