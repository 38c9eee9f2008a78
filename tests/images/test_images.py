"""Build the images and run them as KServe and `docker run` would, against a real S3 server.

Skipped unless TEST_IMAGES=1 (`make test-images` sets it): it needs a container tool that can
build and run (docker, or podman after shared/tools/setup-containers). Containers use the host
network, so the S3 server and the runtimes talk over loopback only.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from images_helpers import IMAGES, REPO, VERSION, generate

pytestmark = [
    pytest.mark.skipif(os.environ.get("TEST_IMAGES") != "1",
                       reason="image tests run with TEST_IMAGES=1 (make test-images)"),
    pytest.mark.timeout(1800),  # the first test of an image may build it
]

TOOL = os.environ.get("CONTAINER_TOOL") or ("podman" if shutil.which("podman") else "docker")
REGISTRY = os.environ.get("REGISTRY") or generate.default_registry()
BUCKET = "models"
IRIS_ROW = [6.8, 2.8, 4.8, 1.4]


@dataclass
class Case:
    """How to make a model folder, and what the runtime answers for one iris row.

    `make(folder)` writes the model folder; the expected answers are exact where given, else
    only their shape is checked (the runtime's own suite checks the values)."""
    make: Callable[[Path], None]
    v1_predictions: list | None = None
    v2_data: list | None = None


def copy_example(name: str) -> Callable[[Path], None]:
    return lambda folder: shutil.copytree(REPO / "examples" / name, folder, dirs_exist_ok=True)


# Runtimes without a case here are built, and checked to run a command, but not to serve.
CASES = {
    "sklearnserver": Case(copy_example("sklearn-iris"), [1], [1]),
    "xgbserver": Case(copy_example("xgboost-iris")),
    "mlflowserver": Case(copy_example("mlflow-iris/model")),
}
V1_REQUEST = {"instances": [IRIS_ROW]}
V2_REQUEST = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 4],
                          "data": IRIS_ROW}]}


def buildable(image) -> bool:
    return (REPO / image.source / "pyproject.toml").is_file()


def wanted(image) -> bool:
    names = os.environ.get("IMAGES_TO_TEST", "").split()
    return buildable(image) and (not names or image.name in names)


RUNTIMES = [i for i in IMAGES if i.is_runtime and wanted(i)]
INITIALIZER = next(i for i in IMAGES if not i.is_runtime)
needs_initializer = pytest.mark.skipif(not wanted(INITIALIZER),
                                       reason="storage-initializer not in IMAGES_TO_TEST")


def tool(*args: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([TOOL, *args], capture_output=True, text=True, check=check,
                          timeout=timeout, **kw)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return sock.getsockname()[1]


_built: dict[str, str] = {}


def image_ref(name: str) -> str:
    """The image as `make build-<name>` tags it; built now if it is not there yet."""
    if name not in _built:
        ref = f"{REGISTRY}/{name}:{VERSION}"
        if tool("image", "inspect", ref, check=False).returncode != 0:
            subprocess.run(["make", f"build-{name}", f"CONTAINER_TOOL={TOOL}",
                            f"REGISTRY={REGISTRY}"], cwd=REPO, check=True, timeout=1500)
        _built[name] = ref
    return _built[name]


class Container:
    def __init__(self, image: str, *args: str, env: dict | None = None,
                 volumes: tuple[str, ...] = (), detach: bool = True):
        self.name = f"imgtest-{uuid.uuid4().hex[:10]}"
        command = ["run", "--name", self.name, "--network", "host"]
        if detach:
            command.append("-d")
        for key, value in (env or {}).items():
            command += ["-e", f"{key}={value}"]
        for volume in volumes:
            command += ["-v", volume]
        self.started = time.monotonic()
        self.result = tool(*command, image, *args, check=False, timeout=300)
        if detach and self.result.returncode != 0:
            raise RuntimeError(f"{TOOL} run failed: {self.result.stderr}")

    def logs(self) -> str:
        result = tool("logs", self.name, check=False)
        return result.stdout + result.stderr

    def exit_code(self, timeout: float) -> int:
        return int(tool("wait", self.name, timeout=timeout).stdout.strip().splitlines()[-1])

    def running(self) -> bool:
        out = tool("inspect", "-f", "{{.State.Running}}", self.name, check=False).stdout
        return out.strip() == "true"

    def remove(self) -> None:
        tool("rm", "-f", self.name, check=False)


@pytest.fixture
def containers():
    started: list[Container] = []

    def run(*args, **kw) -> Container:
        container = Container(*args, **kw)
        started.append(container)
        return container

    yield run
    for container in started:
        container.remove()


class Runtime:
    """A runtime container serving on free host ports."""

    def __init__(self, containers, image: str, *args: str, env=None, volumes=()):
        self.http_port, self.grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.container = containers(image, *args, f"--http_port={self.http_port}",
                                    f"--grpc_port={self.grpc_port}", env=env, volumes=volumes)

    def wait_ready(self, model: str, timeout: float = 120) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/v2/models/{model}/ready", timeout=2).ok:
                    return time.monotonic() - self.container.started
            except requests.ConnectionError:
                pass
            if not self.container.running():
                break
            time.sleep(0.1)
        raise AssertionError(f"not ready:\n{self.container.logs()}")

    def check_predictions(self, model: str, case: Case) -> None:
        v1 = requests.post(f"{self.url}/v1/models/{model}:predict", json=V1_REQUEST, timeout=30)
        assert v1.status_code == 200, v1.text
        predictions = v1.json()["predictions"]
        assert len(predictions) == 1
        if case.v1_predictions is not None:
            assert predictions == case.v1_predictions
        v2 = requests.post(f"{self.url}/v2/models/{model}/infer", json=V2_REQUEST, timeout=30)
        assert v2.status_code == 200, v2.text
        outputs = v2.json()["outputs"]
        assert outputs and outputs[0]["shape"][0] == 1
        if case.v2_data is not None:
            assert outputs[0]["data"] == case.v2_data

    def check_grpc(self) -> None:
        """The gRPC port answers the standard health check (or at least accepts connections)."""
        socket.create_connection(("127.0.0.1", self.grpc_port), timeout=5).close()
        try:
            import grpc
            from grpc_health.v1 import health_pb2, health_pb2_grpc
        except ImportError:
            return
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    def check_non_root(self) -> None:
        uids = tool("exec", self.container.name, "sh", "-c",
                    "grep -h '^Uid:' /proc/[0-9]*/status").stdout.split("\n")
        assert {tuple(line.split()[1:]) for line in uids if line} == {("1000",) * 4}

    def check_stops_on_sigterm(self, within: float = 10) -> None:
        start = time.monotonic()
        tool("kill", "--signal", "TERM", self.container.name)
        code = self.container.exit_code(timeout=within + 20)
        took = time.monotonic() - start
        assert code == 0, f"exit {code} on SIGTERM:\n{self.container.logs()}"
        assert took < within, f"took {took:.1f}s to stop"


# ---- S3 on loopback --------------------------------------------------------------------------

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """The model folder of each case under test, by image name."""
    folders = {}
    needed = {i.name for i in RUNTIMES} | {"sklearnserver"}  # the initializer fetches that one
    for name, case in CASES.items():
        if name not in needed:
            continue
        folder = tmp_path_factory.mktemp(name)
        case.make(folder)
        for path in [folder, *folder.rglob("*")]:  # readable by the container's uid 1000
            path.chmod(0o755 if path.is_dir() else 0o644)
        folders[name] = folder
    return folders


@pytest.fixture(scope="module")
def s3(models):
    """A moto S3 server on 127.0.0.1 holding each model folder under s3://models/<image>/."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    for name, folder in models.items():
        for path in folder.rglob("*"):
            if path.is_file():
                client.upload_file(str(path), BUCKET, f"{name}/{path.relative_to(folder)}")
    yield {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}
    server.stop()


# ---- runtime images --------------------------------------------------------------------------

def case_of(image, models) -> tuple[Case, Path]:
    if image.name not in CASES:
        pytest.skip(f"no model for {image.name} in CASES")
    return CASES[image.name], models[image.name]


@pytest.mark.parametrize("image", RUNTIMES, ids=lambda i: i.name)
def test_kserve_args_local_model(image, containers, models):
    """KServe's args on a model folder mounted read-only; non-root; SIGTERM ends it with 0."""
    case, folder = case_of(image, models)
    runtime = Runtime(containers, image_ref(image.name), "--model_name=iris",
                      "--model_dir=/mnt/models", volumes=(f"{folder}:/mnt/models:ro",))
    took = runtime.wait_ready("iris")
    print(f"{image.name}: ready {took:.2f}s after `{TOOL} run`")
    runtime.check_predictions("iris", case)
    if generate.SERVES_GRPC:
        runtime.check_grpc()
    runtime.check_non_root()
    runtime.check_stops_on_sigterm()


@pytest.mark.parametrize("image", RUNTIMES, ids=lambda i: i.name)
def test_storage_uri_from_s3(image, containers, models, s3):
    """`docker run -e STORAGE_URI=s3://... -e MODEL_NAME=...`: downloads, then serves."""
    case, _ = case_of(image, models)
    runtime = Runtime(containers, image_ref(image.name),
                      env={**s3, "STORAGE_URI": f"s3://{BUCKET}/{image.name}",
                           "MODEL_NAME": "iris"})
    runtime.wait_ready("iris")
    runtime.check_predictions("iris", case)
    runtime.check_non_root()
    runtime.check_stops_on_sigterm()


@pytest.mark.parametrize("image", RUNTIMES, ids=lambda i: i.name)
def test_storage_uri_already_in_model_dir(image, containers, models):
    """KServe's storage initializer sets a container's STORAGE_URI to /mnt/models, which it has
    filled and mounts read-only: nothing to fetch."""
    case, folder = case_of(image, models)
    runtime = Runtime(containers, image_ref(image.name), "--model_name=iris",
                      env={"STORAGE_URI": "/mnt/models"},
                      volumes=(f"{folder}:/mnt/models:ro",))
    runtime.wait_ready("iris")
    runtime.check_predictions("iris", case)


@pytest.mark.parametrize("image", RUNTIMES, ids=lambda i: i.name)
def test_wrong_storage_uri_exits_with_a_message(image, containers, s3):
    uri = f"s3://{BUCKET}/no-such-model"
    runtime = Runtime(containers, image_ref(image.name),
                      env={**s3, "STORAGE_URI": uri, "MODEL_NAME": "iris"})
    code = runtime.container.exit_code(timeout=120)
    logs = runtime.container.logs()
    assert code != 0, logs
    assert "Traceback" not in logs, logs
    assert "no-such-model" in logs or "could not fetch" in logs, logs


@pytest.mark.parametrize("image", RUNTIMES, ids=lambda i: i.name)
def test_runs_a_command_instead(image, containers):
    container = containers(image_ref(image.name), "id", "-u", detach=False)
    assert container.result.returncode == 0, container.result.stderr
    assert container.result.stdout.strip() == "1000"


# ---- storage initializer ---------------------------------------------------------------------

def writable_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    folder.chmod(0o777)  # the container's uid 1000 writes here
    return folder


@needs_initializer
def test_storage_initializer_downloads(containers, models, s3, tmp_path):
    """As KServe runs it: args `<storageUri> /mnt/models`, /mnt/models a shared volume."""
    folder = writable_dir(tmp_path)
    container = containers(image_ref(INITIALIZER.name), f"s3://{BUCKET}/sklearnserver",
                           "/mnt/models", env=s3, volumes=(f"{folder}:/mnt/models",),
                           detach=False)
    assert container.result.returncode == 0, container.result.stdout + container.result.stderr
    expected = sorted(p.name for p in models["sklearnserver"].iterdir())
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == expected


@needs_initializer
def test_storage_initializer_wrong_uri(containers, s3, tmp_path):
    folder = writable_dir(tmp_path)
    container = containers(image_ref(INITIALIZER.name), f"s3://{BUCKET}/no-such-model",
                           "/mnt/models", env=s3, volumes=(f"{folder}:/mnt/models",),
                           detach=False)
    output = container.result.stdout + container.result.stderr
    assert container.result.returncode != 0, output
    assert "Traceback" not in output and "no-such-model" in output, output
