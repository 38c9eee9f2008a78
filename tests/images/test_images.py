"""Build the images and run them as KServe and `docker run` would, against a real S3 server.

Skipped unless TEST_IMAGES=1 (`make test-images` sets it): it needs a container tool that can
build and run (docker, or podman after shared/tools/setup-containers).

Every runtime image serves its example model (examples/<Dockerfile suffix>-iris) two ways:

- as KServe runs the pod: the storage-initializer image, as the init container, fetches the model
  from S3 into a shared folder; then the runtime starts with its manifest's container rendered as
  KServe renders it: the args with {{.Name}} filled in, the securityContext (read-only root
  filesystem, no capabilities, no privilege escalation), the resource limits, only the volumes
  the manifest declares, and the model folder read-only at /mnt/models; once as uid 1000 and
  once as an arbitrary uid in group 0, as OpenShift runs it. It has a network of its own, so the
  manifest's ports are used as they are.
- in one container: STORAGE_URI=s3://..., downloading into the image's own /mnt/models.

Each answers v1 and v2 (with the input names and types its metadata gives) with the iris class,
and gRPC health checks. The S3 server (moto) listens on loopback only; the containers that talk
to it share the host's network.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml

from fake_hub import push, start_hub
from images_helpers import IMAGES, REPO, VERSION, generate
from mlflow_registry import running_registry
from ports import free_port, free_ports

EXAMPLES = REPO / "examples"

pytestmark = [
    pytest.mark.skipif(os.environ.get("TEST_IMAGES") != "1",
                       reason="image tests run with TEST_IMAGES=1 (make test-images)"),
    pytest.mark.timeout(1800),  # the first test of an image may build it
]

TOOL = os.environ.get("CONTAINER_TOOL") or ("podman" if shutil.which("podman") else "docker")
PODMAN = Path(TOOL).name == "podman"
REGISTRY = os.environ.get("REGISTRY") or generate.default_registry()
BUCKET = "models"
MODEL = "iris"  # the InferenceService name, {{.Name}} in the manifest's args
IRIS_ROW = [6.8, 2.8, 4.8, 1.4]
IRIS_CLASS = 1  # versicolor, what every example model predicts for IRIS_ROW
# OpenShift runs a container as an arbitrary uid from the namespace's range, in group 0.
OPENSHIFT_USER = f"{random.randint(1_000_100_000, 1_000_999_999)}:0"

# Measured along the way, printed by conftest.py at the end.
READY_SECONDS: dict[str, float] = {}


def buildable(image) -> bool:
    return (REPO / image.source / "pyproject.toml").is_file()


def wanted(image) -> bool:
    names = os.environ.get("IMAGES_TO_TEST", "").split()
    return buildable(image) and (not names or image.name in names)


RUNTIMES = [i for i in IMAGES if i.is_runtime and wanted(i)]
INITIALIZER = next(i for i in IMAGES if not i.is_runtime)
needs_initializer = pytest.mark.skipif(not wanted(INITIALIZER),
                                       reason="storage-initializer not in IMAGES_TO_TEST")


def example_model(image) -> Path:
    folder = REPO / "examples" / f"{image.short}-iris"
    return folder / "model" if (folder / "model").is_dir() else folder


def tool(*args: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([TOOL, *args], capture_output=True, text=True, check=check,
                          timeout=timeout, **kw)


_built: dict[str, str] = {}


def image_ref(name: str) -> str:
    """The image as `make build-<name>` tags it; built now if it is not there yet."""
    if name not in _built:
        ref = f"{REGISTRY}/{name}:{generate.image_tag(VERSION)}"
        if tool("image", "inspect", ref, check=False).returncode != 0:
            subprocess.run(["make", f"build-{name}", f"CONTAINER_TOOL={TOOL}",
                            f"REGISTRY={REGISTRY}"], cwd=REPO, check=True, timeout=1500)
        _built[name] = ref
    return _built[name]


def manifest_container(image) -> tuple[dict, list[dict]]:
    """The kserve-container of the image's ServingRuntime, and its volumes."""
    runtime = yaml.safe_load((REPO / "manifests" / f"{image.runtime_name}.yaml").read_text())
    (container,) = runtime["spec"]["containers"]
    return container, runtime["spec"].get("volumes", [])


class Container:
    def __init__(self, image: str, *args: str, options: list[str] = (), env: dict | None = None,
                 detach: bool = True):
        self.name = f"imgtest-{uuid.uuid4().hex[:10]}"
        command = ["run", "--name", self.name, *options]
        if detach:
            command.append("-d")
        for key, value in (env or {}).items():
            command += ["-e", f"{key}={value}"]
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


# The containers that talk to the S3 server, which listens on loopback only.
HOST_NETWORK = ["--network", "host"]


def read_only() -> list[str]:
    # podman mounts tmpfs on /tmp, /var/tmp and /run with --read-only unless told not to;
    # Kubernetes mounts nothing there.
    return ["--read-only", *(["--read-only-tmpfs=false"] if PODMAN else [])]


def empty_dir(tmp_path: Path, name: str) -> Path:
    """A folder as an emptyDir is: empty, writable by any uid."""
    folder = tmp_path / name
    folder.mkdir()
    folder.chmod(0o777)
    return folder


def manifest_volumes(image, tmp_path: Path) -> list[str]:
    """`run` options for the volumes the manifest mounts into the container (emptyDirs)."""
    container, volumes = manifest_container(image)
    declared = {v["name"]: v for v in volumes}
    options = []
    for mount in container.get("volumeMounts", []):
        assert "emptyDir" in declared[mount["name"]], "only emptyDirs are emulated here"
        options += ["-v", f"{empty_dir(tmp_path, mount['name'])}:{mount['mountPath']}"]
    return options


def kserve_options(image, tmp_path: Path, user: str,
                   model_folder: Path) -> tuple[list[str], list[str], int, int]:
    """`run` options and args for the runtime as KServe would create its container from the
    manifest, with its ports published on free host ports."""
    container, _ = manifest_container(image)
    args = [a.replace("{{.Name}}", MODEL) for a in container["args"]]
    http_port, grpc_port = free_ports(2)
    # A network of the pod's own, so that the manifest's ports are used as they are.
    options = ["--user", user, "--network", "bridge",
               "-p", f"127.0.0.1:{http_port}:{generate.HTTP_PORT}",
               "-p", f"127.0.0.1:{grpc_port}:{generate.GRPC_PORT}"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["capabilities"]["drop"] == ["ALL"]
    options.append("--cap-drop=ALL")
    if security.get("allowPrivilegeEscalation") is False:
        options.append("--security-opt=no-new-privileges")
    if security.get("readOnlyRootFilesystem"):
        options += read_only()
    limits = container["resources"]["limits"]
    options += [f"--cpus={limits['cpu']}", f"--memory={limits['memory'].replace('Gi', 'g')}"]
    options += manifest_volumes(image, tmp_path)
    # KServe's model volume, which the storage initializer filled.
    options += ["-v", f"{model_folder}:/mnt/models:ro"]
    return options, args, http_port, grpc_port


class Runtime:
    """A runtime container and the host ports it answers on."""

    def __init__(self, container: Container, http_port: int, grpc_port: int):
        self.container = container
        self.url = f"http://127.0.0.1:{http_port}"
        self.grpc_port = grpc_port

    def wait_ready(self, timeout: float = 180) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/v2/models/{MODEL}/ready", timeout=2).ok:
                    return time.monotonic() - self.container.started
            except (requests.ConnectionError, requests.Timeout):  # not listening, or busy loading
                pass
            if not self.container.running():
                break
            time.sleep(0.1)
        raise AssertionError(f"not ready:\n{self.container.logs()}")

    def check_predictions(self) -> None:
        """v1 and v2 requests built from the model's metadata answer the iris class."""
        metadata = requests.get(f"{self.url}/v2/models/{MODEL}", timeout=10)
        assert metadata.status_code == 200, metadata.text
        inputs = metadata.json()["inputs"]
        assert inputs, "the model declares no inputs"
        if len(inputs) == 1:  # one [rows, 4] tensor
            v1 = {"instances": [IRIS_ROW]}
            v2 = [{"name": inputs[0]["name"], "datatype": inputs[0]["datatype"],
                   "shape": [1, 4], "data": IRIS_ROW}]
        else:  # one column per feature
            assert len(inputs) == len(IRIS_ROW), inputs
            v1 = {"instances": [{i["name"]: x for i, x in zip(inputs, IRIS_ROW)}]}
            v2 = [{"name": i["name"], "datatype": i["datatype"], "shape": [1], "data": [x]}
                  for i, x in zip(inputs, IRIS_ROW)]
        reply = requests.post(f"{self.url}/v1/models/{MODEL}:predict", json=v1, timeout=30)
        assert reply.status_code == 200, reply.text
        (prediction,) = reply.json()["predictions"]
        assert predicted_class(prediction) == IRIS_CLASS, reply.text
        reply = requests.post(f"{self.url}/v2/models/{MODEL}/infer", json={"inputs": v2},
                              timeout=30)
        assert reply.status_code == 200, reply.text
        outputs = {o["name"]: o for o in reply.json()["outputs"]}
        output = outputs.get("class") or outputs.get("predict") or next(iter(outputs.values()))
        assert output["shape"][0] == 1
        assert predicted_class(output["data"]) == IRIS_CLASS, reply.text

    def check_grpc(self) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    def check_user(self, user: str) -> None:
        """Every process runs as `user` (uid[:gid])."""
        uid, _, gid = user.partition(":")
        status = tool("exec", self.container.name, "sh", "-c",
                      "grep -h '^[UG]id:' /proc/[0-9]*/status").stdout.split("\n")
        ids = {tuple(line.split()) for line in status if line}
        assert {i[1:] for i in ids if i[0] == "Uid:"} == {(uid,) * 4}, ids
        if gid:
            assert {i[1:] for i in ids if i[0] == "Gid:"} == {(gid,) * 4}, ids

    def check_stops_on_sigterm(self, within: float = 10) -> None:
        start = time.monotonic()
        tool("kill", "--signal", "TERM", self.container.name)
        code = self.container.exit_code(timeout=within + 20)
        took = time.monotonic() - start
        assert code == 0, f"exit {code} on SIGTERM:\n{self.container.logs()}"
        assert took < within, f"took {took:.1f}s to stop"


def predicted_class(value) -> int:
    """The class in an answer: a class, a one-element list, probabilities, or a dict of outputs
    with a `class`."""
    if isinstance(value, dict):
        value = value.get("class", next(iter(value.values())))
    if isinstance(value, list):
        if len(value) == 1:
            return predicted_class(value[0])
        return max(range(len(value)), key=value.__getitem__)
    return int(value)


# ---- S3 on loopback --------------------------------------------------------------------------

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 holding each runtime's example model under
    s3://models/<image>/."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    for image in IMAGES:
        if not image.is_runtime:
            continue
        folder = example_model(image)
        for path in folder.rglob("*"):
            if path.is_file() and path.name != "make_model.py":
                client.upload_file(str(path), BUCKET, f"{image.name}/{path.relative_to(folder)}")
    yield {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}
    server.stop()


def fetch_as_init_container(containers, s3, folder: Path, uri: str, user: str) -> Container:
    """The storage initializer as KServe runs it: args `<storageUri> /mnt/models`, the shared
    folder at /mnt/models; read-only root filesystem, as the same user as the pod's runtime."""
    return containers(image_ref(INITIALIZER.name), uri, "/mnt/models", env=s3, detach=False,
                      options=[*HOST_NETWORK, "--user", user, "--cap-drop=ALL", *read_only(),
                               "-v", f"{folder}:/mnt/models"])


# ---- runtime images --------------------------------------------------------------------------

@needs_initializer
@pytest.mark.parametrize("user", ["1000", OPENSHIFT_USER], ids=["uid1000", "openshift"])
@pytest.mark.parametrize("image", RUNTIMES, ids=lambda i: i.name)
def test_kserve_pod(image, user, containers, s3, tmp_path):
    """Init container, then the runtime from its manifest: ready, v1, v2, gRPC, the user, and
    exit 0 within seconds of SIGTERM."""
    models = empty_dir(tmp_path, "kserve-provision-location")
    init = fetch_as_init_container(containers, s3, models, f"s3://{BUCKET}/{image.name}", user)
    assert init.result.returncode == 0, init.result.stdout + init.result.stderr
    options, args, http_port, grpc_port = kserve_options(image, tmp_path, user, models)
    runtime = Runtime(containers(image_ref(image.name), *args, options=options),
                      http_port, grpc_port)
    took = runtime.wait_ready()
    READY_SECONDS.setdefault(image.name, took)
    runtime.check_predictions()
    runtime.check_grpc()
    runtime.check_user(user)
    runtime.check_stops_on_sigterm()


def one_container(containers, image, env: dict, user: str | None = None) -> Runtime:
    http_port, grpc_port = free_ports(2)
    options = [*HOST_NETWORK, *(["--user", user] if user else [])]
    return Runtime(containers(image_ref(image.name), f"--http_port={http_port}",
                              f"--grpc_port={grpc_port}", env=env, options=options),
                   http_port, grpc_port)


@pytest.mark.parametrize("image", RUNTIMES, ids=lambda i: i.name)
def test_storage_uri_from_s3(image, containers, s3):
    """`docker run -e STORAGE_URI=s3://... -e MODEL_NAME=...`: downloads into the image's own
    /mnt/models (group 0's, so an OpenShift uid writes there too), then serves."""
    runtime = one_container(containers, image, user=OPENSHIFT_USER,
                            env={**s3, "STORAGE_URI": f"s3://{BUCKET}/{image.name}",
                                 "MODEL_NAME": MODEL})
    runtime.wait_ready()
    runtime.check_predictions()
    runtime.check_user(OPENSHIFT_USER)
    runtime.check_stops_on_sigterm()


@pytest.mark.parametrize("image", RUNTIMES, ids=lambda i: i.name)
def test_storage_uri_already_in_model_dir(image, containers):
    """STORAGE_URI=/mnt/models, a folder already filled and mounted read-only: nothing to
    fetch."""
    http_port, grpc_port = free_ports(2)
    container = containers(
        image_ref(image.name), f"--model_name={MODEL}", f"--http_port={http_port}",
        f"--grpc_port={grpc_port}", env={"STORAGE_URI": "/mnt/models"},
        options=[*HOST_NETWORK, "-v", f"{example_model(image)}:/mnt/models:ro"])
    runtime = Runtime(container, http_port, grpc_port)
    runtime.wait_ready()
    runtime.check_predictions()


@pytest.mark.parametrize("image", RUNTIMES, ids=lambda i: i.name)
def test_wrong_storage_uri_exits_with_a_message(image, containers, s3):
    uri = f"s3://{BUCKET}/no-such-model"
    runtime = one_container(containers, image, env={**s3, "STORAGE_URI": uri,
                                                    "MODEL_NAME": MODEL})
    code = runtime.container.exit_code(timeout=120)
    logs = runtime.container.logs()
    assert code != 0, logs
    assert "Traceback" not in logs, logs
    assert "no-such-model" in logs or "could not fetch" in logs, logs


# Inside the image: load the example model with the image's runtime, then list the modules from
# the venv that have no .pyc (each would be compiled at every start) and any CUDA distribution.
CONTENTS_CHECK = """
import importlib.metadata, importlib.util, json, os, re, sys
from modelserver.runtime.registry import installed
(runtime,) = installed().values()
runtime("iris", "/mnt/models").load()
files = [getattr(m, "__file__", None) or "" for m in list(sys.modules.values())]
uncompiled = sorted(f for f in files if f.startswith("/opt/venv/") and f.endswith(".py")
                    and not os.path.exists(importlib.util.cache_from_source(f)))
cuda = sorted(d.metadata["Name"] for d in importlib.metadata.distributions()
              if re.search(r"^(nvidia-|cuda-)|-cu\\d+$", d.metadata["Name"].lower()))
print(json.dumps({"modules": len(sys.modules), "uncompiled": uncompiled, "cuda": cuda}))
"""


@pytest.mark.parametrize("image", RUNTIMES, ids=lambda i: i.name)
def test_imports_are_precompiled_and_cpu_only(image, containers, tmp_path):
    container = containers(image_ref(image.name), "python", "-c", CONTENTS_CHECK, detach=False,
                           options=["--user", "1000", *read_only(), "--network", "none",
                                    *manifest_volumes(image, tmp_path),
                                    "-v", f"{example_model(image)}:/mnt/models:ro"])
    assert container.result.returncode == 0, container.result.stderr
    found = json.loads(container.result.stdout.strip().splitlines()[-1])
    assert found["modules"] > 200  # the framework came in
    assert found["uncompiled"] == [] and found["cuda"] == [], found


@pytest.mark.parametrize("image", RUNTIMES, ids=lambda i: i.name)
def test_runs_a_command_instead(image, containers):
    container = containers(image_ref(image.name), "id", "-u", detach=False)
    assert container.result.returncode == 0, container.result.stderr
    assert container.result.stdout.strip() == "1000"


# ---- storage initializer ---------------------------------------------------------------------

@needs_initializer
def test_storage_initializer_downloads(containers, s3, tmp_path):
    runtime = next(i for i in IMAGES if i.is_runtime)
    folder = empty_dir(tmp_path, "models")
    container = fetch_as_init_container(containers, s3, folder, f"s3://{BUCKET}/{runtime.name}",
                                        "1000")
    assert container.result.returncode == 0, container.result.stdout + container.result.stderr
    expected = sorted(p.name for p in example_model(runtime).iterdir() if p.name != "make_model.py")
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == expected


@pytest.fixture(scope="module")
def hub():
    """The fake Hugging Face Hub (tests/fake_hub.py) holding the scikit-learn example as the
    repository `acme/iris`, and the environment that points huggingface_hub at it."""
    url, servers = start_hub()
    push("acme/iris", {"model.joblib": (EXAMPLES / "sklearn-iris" / "model.joblib").read_bytes(),
                       "README.md": b"# iris"})
    yield {"HF_ENDPOINT": url}
    for server in servers:
        server.shutdown()


@pytest.fixture(scope="module")
def mlflow_registry(tmp_path_factory):
    """A real `mlflow server` holding the model `iris` (alias `champion`; see
    tests/mlflow_registry.py), and the environment that points MLflow at it."""
    with running_registry(tmp_path_factory.mktemp("mlflow")) as (url, _):
        yield {"MLFLOW_TRACKING_URI": url}


@needs_initializer
@pytest.mark.parametrize("uri,expected", [
    ("hf://acme/iris", ["README.md", "model.joblib"]),
    ("hf://acme/iris/model.joblib", ["model.joblib"]),
], ids=["repository", "one-file"])
def test_storage_initializer_fetches_from_the_hub(containers, hub, tmp_path, uri, expected):
    folder = empty_dir(tmp_path, "models")
    container = fetch_as_init_container(containers, hub, folder, uri, "1000")
    assert container.result.returncode == 0, container.result.stdout + container.result.stderr
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == expected
    assert (folder / "model.joblib").read_bytes() == \
        (EXAMPLES / "sklearn-iris" / "model.joblib").read_bytes()


@needs_initializer
def test_storage_initializer_resolves_mlflow_registry_uris(containers, mlflow_registry, tmp_path):
    folder = empty_dir(tmp_path, "models")
    container = fetch_as_init_container(containers, mlflow_registry, folder,
                                        "models:/iris@champion", "1000")
    assert container.result.returncode == 0, container.result.stdout + container.result.stderr
    assert (folder / "MLmodel").is_file(), sorted(p.name for p in folder.iterdir())


@needs_initializer
def test_storage_initializer_wrong_uri(containers, s3, tmp_path):
    folder = empty_dir(tmp_path, "models")
    container = fetch_as_init_container(containers, s3, folder, f"s3://{BUCKET}/no-such-model",
                                        "1000")
    output = container.result.stdout + container.result.stderr
    assert container.result.returncode != 0, output
    assert "Traceback" not in output and "no-such-model" in output, output
