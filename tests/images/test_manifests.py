"""The generated Dockerfiles and ClusterServingRuntimes match VERSION, docker/images.txt and the
Makefile. No container tool needed: these run in every `make test`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from images_helpers import IMAGES, REPO, VERSION, generate

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


def test_a_local_version_label_makes_a_valid_tag():
    dry = make("-n", "build-torchserver", "FRAMEWORK_VERSION=2.13.0+cpu")
    assert f"/torchserver:{VERSION}-2.13.0-cpu " in dry
    assert "--build-arg FRAMEWORK_VERSION=2.13.0+cpu" in dry
    assert generate.image_tag("1!2.0+local_x", "v") == "1-2.0-local_x-v"
    assert generate.image_tag(".x", "1" * 200) == ("x-" + "1" * 200)[:127]
    for tag in (generate.image_tag(VERSION, i.default) for i in IMAGES):
        assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag), tag


def test_builds_get_the_host_pip_configuration():
    dry = make("-n", "build-sklearnserver", "CONTAINER_TOOL=podman")
    assert "$(python3 docker/pipconf.py podman " in dry


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
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    # Only the folders the table names are writable, each an emptyDir of the pod's own.
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    assert sorted(mounts.values()) == sorted(image.writable)
    assert spec.get("volumes", []) == [{"name": n, "emptyDir": {}} for n in mounts]


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
    assert text.count("FROM ${BASE_IMAGE}") == 2  # build stages and final stage
    build, final = text.split("\nFROM ${BASE_IMAGE}\n", 1)
    assert "\nUSER 1000\n" in final
    assert "pip install" not in final and "apt-get" not in final
    # Every step that runs pip gets the host's pip.conf and CA bundle as secrets.
    steps = build.split("\nRUN ")[1:]
    assert sum("/opt/pip/bin/p" in step for step in steps) == 4  # resolve, core, runtime, app
    for step in steps:
        if "/opt/pip/bin/p" in step:
            assert step.startswith("--mount=type=secret,id=pip-conf,target=/etc/pip.conf "
                                   "--mount=type=secret,id=pip-cert "), step
    # The shared layer first, then the image's own packages, then this project's.
    copies = [line for line in final.splitlines() if line.startswith("COPY --from=")]
    assert copies[1:] == ["COPY --from=core /opt/venv /opt/venv",
                          "COPY --from=runtime /layers/runtime/ /",
                          "COPY --from=app /layers/app/ /"]
    if image.without:
        assert f"--without {','.join(image.without)}\n" in build
    for label in ("version", "revision", "source"):
        assert f"org.opencontainers.image.{label}=" in final
    if image.is_runtime:
        assert "\nEXPOSE 8080 8081\n" in final
        assert f'"/usr/local/bin/entrypoint", "{image.name}"]' in final
        assert f"ARG FRAMEWORK_VERSION={image.default}\n" in text


def test_runtime_images_share_their_first_layers():
    """Up to the core venv, every runtime Dockerfile's final stage and the stages it copies from
    read the same, so one build's layers are the next one's cache (and one pull for all)."""
    def shared(image):
        text = (REPO / image.dockerfile).read_text()
        tools = text[text.index("FROM ${BASE_IMAGE} AS tools"):text.index("# ---- resolve")]
        core = text[text.index("FROM tools AS core"):text.index("# ---- runtime")]
        final = text.split("\nFROM ${BASE_IMAGE}\n", 1)[1]
        return tools, core, final[:final.index("COPY --from=runtime")]

    assert len({shared(i) for i in RUNTIMES}) == 1


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
