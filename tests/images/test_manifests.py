"""The generated Dockerfiles and ClusterServingRuntimes match VERSION, docker/images.txt and the
Makefile; the image helpers (requirements.py, entrypoint.sh) do what the Dockerfiles rely on.
No container tool needed: these run in every `make test`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from images_helpers import IMAGES, REPO, VERSION, generate, requirements

RUNTIMES = [i for i in IMAGES if i.is_runtime]
# A make started from `make test` must not inherit its flags and variables.
MAKE_ENV = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}


def make(*args: str) -> str:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, env=MAKE_ENV,
                          capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def makefile() -> dict[str, str]:
    """What the Makefile itself says: image names, registry, version."""
    out = make("-s", "print-images")
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def test_generated_files_are_up_to_date():
    result = subprocess.run([sys.executable, "manifests/generate.py", "--check"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_makefile_builds_the_images_of_the_table(makefile):
    assert makefile["images"].split() == [i.name for i in IMAGES]
    assert makefile["version"] == VERSION
    assert makefile["registry"] == generate.default_registry()
    for image in IMAGES:
        assert (REPO / image.dockerfile).is_file()
        dry = make("-n", f"build-{image.name}", "CONTAINER_TOOL=docker")
        assert f"-f {image.dockerfile} -t {makefile['registry']}/{image.name}:{VERSION} " in dry


def test_framework_version_builds_a_variant_tag():
    dry = make("-n", "build-sklearnserver", "FRAMEWORK_VERSION=1.5.2")
    assert f"/sklearnserver:{VERSION}-1.5.2 " in dry
    assert "--build-arg FRAMEWORK_VERSION=1.5.2" in dry
    dry = make("-n", "build-storage-initializer", "FRAMEWORK_VERSION=1.5.2")
    assert f"/storage-initializer:{VERSION} " in dry and "FRAMEWORK_VERSION" not in dry


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("image", RUNTIMES, ids=lambda i: i.name)
def test_serving_runtime(image, makefile):
    (runtime,) = documents(REPO / "manifests" / f"{image.runtime_name}.yaml")
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert runtime["kind"] == "ClusterServingRuntime"
    assert runtime["metadata"]["name"] == image.runtime_name
    spec = runtime["spec"]
    assert spec["annotations"] == {"prometheus.kserve.io/port": "8080",
                                   "prometheus.kserve.io/path": "/metrics"}
    formats = spec["supportedModelFormats"]
    assert [(f["name"], f["version"]) for f in formats] == image.formats
    assert all(f["autoSelect"] is True and f["priority"] > 0 for f in formats)
    assert {"v1", "v2"} <= set(spec["protocolVersions"])
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"] == f"{makefile['registry']}/{image.name}:{VERSION}"
    assert container["args"][0] == "--model_name={{.Name}}"
    assert "--model_dir=/mnt/models" in container["args"]
    assert container["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["securityContext"]["runAsNonRoot"] is True


def test_combined_file_and_kustomization_hold_every_runtime():
    combined = documents(REPO / "manifests" / "runtimes.yaml")
    singles = [documents(REPO / "manifests" / f"{i.runtime_name}.yaml")[0] for i in RUNTIMES]
    assert combined == singles
    kustomization = documents(REPO / "manifests" / "kustomization.yaml")[0]
    assert kustomization["resources"] == [f"{i.runtime_name}.yaml" for i in RUNTIMES]


def test_storage_initializer_patch(makefile):
    import json

    (patch,) = documents(REPO / "manifests" / "storage-initializer-patch.yaml")
    config = json.loads(patch["data"]["storageInitializer"])
    assert config["image"] == f"{makefile['registry']}/storage-initializer:{VERSION}"


@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.name)
def test_dockerfile(image):
    text = (REPO / image.dockerfile).read_text()
    assert "# syntax=" not in text  # BuildKit would pull a frontend image: none is needed
    assert "ARG BASE_IMAGE=python:3.11-slim-bookworm\n" in text
    assert text.count("FROM ${BASE_IMAGE}") == 2  # build stage and final stage
    final = text.split("\nFROM ${BASE_IMAGE}\n", 1)[1]
    assert "\nUSER 1000\n" in final
    assert "pip install" not in final and "apt-get" not in final
    for label in ("version", "revision", "source"):
        assert f"org.opencontainers.image.{label}=" in final
    if image.is_runtime:
        assert "\nEXPOSE 8080 8081\n" in final
        assert f'"/usr/local/bin/entrypoint", "{image.name}"]' in final
        assert f"ARG FRAMEWORK_VERSION={image.default}\n" in text


def test_dockerignore_keeps_the_context_small():
    lines = (REPO / ".dockerignore").read_text().split()
    assert lines.count("*") == 1 and {"!docker/", "!storage/", "!runtimes/"} <= set(lines)


@pytest.mark.skipif(not shutil.which("hadolint", path=os.path.dirname(sys.executable))
                    and not shutil.which("hadolint"), reason="hadolint not installed")
def test_hadolint():
    hadolint = (shutil.which("hadolint", path=os.path.dirname(sys.executable))
                or shutil.which("hadolint"))
    dockerfiles = sorted(str(p) for p in REPO.glob("Dockerfile.*"))
    result = subprocess.run([hadolint, *dockerfiles], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- docker/requirements.py ------------------------------------------------------------------

def test_requirements_leave_out_local_packages_and_expand_extras():
    reqs = requirements.Packages(
        [str(REPO / "storage") + "[s3]", str(REPO / "runtimes/modelserver"),
         str(REPO / "runtimes/sklearn")]).requirements()
    names = [re.match(r"[A-Za-z0-9._-]+", r)[0].lower() for r in reqs]
    assert "boto3" in names and "google-cloud-storage" not in names
    assert not {"modelstorage", "modelserver", "sklearnserver"} & set(names)
    assert "scikit-learn" in names and len(names) == len(set(names))


def test_framework_replacement_keeps_specifier_and_marker():
    out = requirements.apply_framework(
        ["numpy>=1.26", "xgboost>=2.0; sys_platform != 'win32'"], "xgboost-cpu/xgboost", "3.4.1")
    assert out == ["numpy>=1.26", "xgboost-cpu>=2.0,==3.4.1; sys_platform != 'win32'"]
    assert requirements.apply_framework(["torch"], "torch", "") == ["torch"]
    assert requirements.apply_framework(["numpy"], "tensorflow-cpu/tensorflow", "2.21.0") == [
        "numpy", "tensorflow-cpu==2.21.0"]


# ---- docker/entrypoint.sh --------------------------------------------------------------------

@pytest.fixture
def fake_python(tmp_path):
    python = tmp_path / "python"
    python.write_text('#!/bin/sh\necho "$@"\n')
    python.chmod(0o755)
    return {"PATH": f"{tmp_path}:{os.environ['PATH']}"}


def entrypoint(env, *args) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MODEL_DIR", "HTTP_PORT", "GRPC_PORT")} | env
    return subprocess.run(["sh", str(REPO / "docker" / "entrypoint.sh"), *args], env=env,
                          capture_output=True, text=True, check=True).stdout.strip()


def test_entrypoint_puts_kserve_defaults_before_the_given_flags(fake_python):
    defaults = "--model_dir=/mnt/models --http_port=8080 --grpc_port=8081"
    assert entrypoint(fake_python, "sklearnserver") == f"-m sklearnserver {defaults}"
    assert entrypoint(fake_python, "sklearnserver", "--model_name=iris", "--http_port=9000") == (
        f"-m sklearnserver {defaults} --model_name=iris --http_port=9000")
    env = fake_python | {"HTTP_PORT": "9090", "MODEL_DIR": "/models"}
    assert entrypoint(env, "x") == "-m x --model_dir=/models --http_port=9090 --grpc_port=8081"


def test_entrypoint_runs_a_command_instead(fake_python):
    assert entrypoint(fake_python, "sklearnserver", "echo", "hello") == "hello"
