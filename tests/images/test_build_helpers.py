"""The helpers the Dockerfiles and the Makefile run (docker/requirements.py, pipconf.py, slim.py,
entrypoint.sh) do what the builds rely on. No container tool needed: these run in every
`make test`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from images_helpers import REPO, requirements

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


def report(*packages: tuple[str, str, list[str]]) -> dict:
    """A pip --report of these (name, version, requires_dist)."""
    from packaging.markers import default_environment

    return {"environment": default_environment(),
            "install": [{"metadata": {"name": n, "version": v, "requires_dist": deps}}
                        for n, v, deps in packages]}


RESOLVED = report(
    ("numpy", "2.4.6", []),
    ("boto3", "1.44", ["botocore>=1.44", "awscrt; extra == 'crt'"]),
    ("botocore", "1.44", ["urllib3"]),
    ("urllib3", "2.8", []),
    ("tensorflow_cpu", "2.20.0", ["numpy>=1.26", "tensorboard~=2.20", "keras[extra]>=3",
                                  "libclang; python_version < '3'", "wheel; extra == 'dev'"]),
    ("tensorboard", "2.20", ["numpy", "Markdown", "urllib3"]),
    ("markdown", "3.9", []),
    ("keras", "3.15", ["rich; extra == 'extra'"]),
    ("rich", "15.0", []),
)


def test_lock_splits_the_core_from_the_rest_and_leaves_out_what_only_the_left_out_need():
    core = ["numpy>=1.26", "boto3>=1.34"]
    core_pins, runtime_pins = requirements.split(
        RESOLVED, core, [*core, "tensorflow-cpu==2.20.0; sys_platform == 'linux'"], {"tensorboard"})
    assert core_pins == ["boto3==1.44", "botocore==1.44", "numpy==2.4.6", "urllib3==2.8"]
    # tensorboard and Markdown (only tensorboard needs it) are out; keras came with its extra.
    assert runtime_pins == ["keras==3.15", "rich==15.0", "tensorflow_cpu==2.20.0"]


def test_lock_fails_on_a_cuda_package():
    resolved = report(("torch", "2.13.0", ["nvidia-cublas-cu12"]), ("nvidia-cublas-cu12", "12", []))
    with pytest.raises(SystemExit, match="CUDA packages in a CPU image: nvidia-cublas-cu12==12"):
        requirements.split(resolved, [], ["torch"], set())
    for name in ("nvidia-nccl-cu13", "cuda-bindings", "triton", "onnxruntime-gpu", "cupy-cuda12x"):
        assert requirements.CUDA.search(name), name
    for name in ("torch", "tensorflow-cpu", "xgboost-cpu", "onnxruntime", "lightgbm"):
        assert not requirements.CUDA.search(name), name


# ---- docker/pipconf.py -----------------------------------------------------------------------

def pipconf(tool: str, tmp_path: Path, **settings: str) -> tuple[str, str, str]:
    """Runs pipconf.py with only `settings` as pip's configuration: options, pip.conf, stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # none of this machine's pip config files
    env |= {f"PIP_{k.upper()}": v for k, v in settings.items()}
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(REPO / "docker" / "pipconf.py"), tool, str(out)],
                            env=env, capture_output=True, text=True, check=True)
    conf = out / "pip.conf"
    return result.stdout.strip(), conf.read_text() if conf.exists() else "", result.stderr


@pytest.fixture
def mirror(tmp_path) -> dict[str, str]:
    (tmp_path / "pypi" / "simple").mkdir(parents=True)
    (tmp_path / "wheels").mkdir()
    (tmp_path / "ca.pem").write_text("a CA\n")
    return {"index_url": "https://user:token@mirror.example/simple",
            "extra_index_url": f"file://{tmp_path}/pypi/simple https://extra.example/simple",
            "find_links": str(tmp_path / "wheels"), "trusted_host": "mirror.example",
            "cert": str(tmp_path / "ca.pem")}


def test_pipconf_hands_locations_and_trust_to_a_podman_build(tmp_path, mirror):
    options, conf, _ = pipconf("podman", tmp_path, **mirror)
    assert options.split() == [
        f"--secret=id=pip-cert,src={tmp_path}/ca.pem",
        f"--secret=id=pip-conf,src={tmp_path}/out/pip.conf",
        f"--volume={tmp_path}/pypi:{tmp_path}/pypi:ro",  # the index and the files beside it
        f"--volume={tmp_path}/wheels:{tmp_path}/wheels:ro"]
    assert conf.splitlines() == [
        "[global]",
        "index-url = https://user:token@mirror.example/simple",  # a secret, never a build arg
        f"extra-index-url = file://{tmp_path}/pypi/simple https://extra.example/simple",
        f"find-links = {tmp_path}/wheels",
        "trusted-host = mirror.example",
        "cert = /run/secrets/pip-cert"]
    assert (tmp_path / "out" / "pip.conf").stat().st_mode & 0o077 == 0  # it may hold a token


def test_pipconf_leaves_local_folders_out_of_a_docker_build(tmp_path, mirror):
    options, conf, stderr = pipconf("docker", tmp_path, **mirror)
    assert "--volume" not in options and "file://" not in conf and "find-links" not in conf
    assert "extra-index-url = https://extra.example/simple" in conf
    assert f"cannot mount {tmp_path}/wheels" in stderr


# ---- docker/slim.py --------------------------------------------------------------------------

def slim(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "docker" / "slim.py"), *map(str, args)],
                          capture_output=True, text=True)


def write(root: Path, *paths: str) -> None:
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("x = 1\n" if path.endswith(".py") else "data\n")


def test_slim_prunes_compiles_and_gathers_only_the_new_files(tmp_path):
    venv = tmp_path / "venv"
    site = venv / "lib" / "python3.11" / "site-packages"
    write(site, "core/__init__.py")
    assert slim(venv, "--snapshot", tmp_path / "before").returncode == 0
    write(site, "pkg/__init__.py", "pkg/mod.py", "pkg/tests/test_mod.py", "pkg/include/pkg.h",
          "pkg/_ext.c", "pkg/_ext.pyx", "pkg/libstatic.a", "pkg/testing.py",
          "pkg-1.0.dist-info/licenses/include/LICENSE",
          "botocore/data/s3/2006-03-01/service-2.json.gz", "botocore/data/ec2/x/service-2.json.gz",
          "botocore/data/endpoints.json", "torch/bin/protoc", "torch/bin/test_api",
          "torch/bin/torch_shm_manager", "torch/test/c10_test", "pkg/test/__init__.py")
    result = slim(venv, "--since", tmp_path / "before", "--into", tmp_path / "layer")
    assert result.returncode == 0, result.stderr
    left = {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()}
    assert left == {
        "core/__init__.py", "pkg/__init__.py", "pkg/mod.py", "pkg/testing.py",
        "pkg/test/__init__.py", "pkg/test/__pycache__/__init__.cpython-311.pyc",
        "pkg/__pycache__/__init__.cpython-311.pyc", "pkg/__pycache__/mod.cpython-311.pyc",
        "pkg/__pycache__/testing.cpython-311.pyc",
        "pkg-1.0.dist-info/licenses/include/LICENSE",
        "botocore/data/s3/2006-03-01/service-2.json.gz", "botocore/data/endpoints.json",
        "torch/bin/torch_shm_manager"} | {
        p for p in left if p.endswith(".pyc") and sys.version_info[:2] != (3, 11)}
    pyc = next((site / "pkg" / "__pycache__").glob("mod.*.pyc")).read_bytes()
    assert int.from_bytes(pyc[4:8], "little") == 0b01  # hash-based, never checked
    # The layer holds the new paths only, as links to the same files.
    layer = tmp_path / "layer" / venv.relative_to("/")
    gathered = {p.relative_to(layer).as_posix() for p in layer.rglob("*") if p.is_file()}
    assert gathered == {f"lib/python3.11/site-packages/{p}" for p in left - {"core/__init__.py"}}
    assert (layer / "lib/python3.11/site-packages/pkg/mod.py").samefile(site / "pkg" / "mod.py")


def test_sourceless_keeps_the_sources_of_packages_that_read_them(tmp_path):
    venv = tmp_path / "venv"
    site = venv / "lib" / "python3.11" / "site-packages"
    write(site, "plain/__init__.py", "plain/sub/mod.py", "single.py", "introspects/__init__.py")
    (site / "introspects" / "config.py").write_text(
        "import inspect\nSOURCE = inspect.getsource(inspect)\n")
    result = slim(venv, "--sourceless")
    assert result.returncode == 0, result.stderr
    files = {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()}
    assert {"plain/__init__.pyc", "plain/sub/mod.pyc", "single.pyc"} <= files
    assert not {"plain/__init__.py", "plain/sub/mod.py", "single.py"} & files
    assert {"introspects/config.py", "introspects/__init__.py"} <= files
    assert "sources kept for introspects" in result.stdout
    imported = subprocess.run([sys.executable, "-c", "import plain.sub.mod, single; "
                               "print(plain.sub.mod.__file__, plain.sub.mod.x)"], cwd=site,
                              capture_output=True, text=True, check=True).stdout
    assert imported.strip() == f"{site}/plain/sub/mod.pyc 1"


def test_slim_fails_on_a_cuda_library(tmp_path):
    venv = tmp_path / "venv"
    write(venv / "lib" / "python3.11" / "site-packages", "torch/lib/libcudart.so.12")
    result = slim(venv)
    assert result.returncode == 1 and "libcudart.so.12" in result.stderr


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
