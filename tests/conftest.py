"""Shared fixtures: start a real server process on free loopback ports and talk to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from ports import free_port, free_ports  # noqa: F401  (free_port: for test modules)

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


class ServerProcess:
    """A server subprocess with its own ports and log file, listening on `host` (reached on
    loopback)."""

    def __init__(self, command: list[str], log_path: Path, env: dict | None = None,
                 host: str = "127.0.0.1"):
        self.http_port, self.grpc_port = free_ports(2)
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.command = [
            *command,
            "--http_port", str(self.http_port),
            "--grpc_port", str(self.grpc_port),
            "--host", host,
        ]
        self.log_path = log_path
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServerProcess:
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.command, stdout=self.log_file, stderr=subprocess.STDOUT, env=self.env, cwd=REPO
        )
        return self

    def wait_listening(self, timeout: float = 60) -> None:
        self._wait(lambda: requests.get(self.url + "/v2/health/live", timeout=2), timeout)

    def wait_ready(self, path: str = "/v2/health/ready", timeout: float = 120) -> None:
        def ready():
            response = requests.get(self.url + path, timeout=2)
            return response if response.status_code == 200 else None

        self._wait(ready, timeout)

    def _wait(self, probe, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if probe():
                    return
            except requests.RequestException:  # not listening yet, or busy starting
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not up after {timeout}s:\n{self.output()}")

    def wait_exit(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 20) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def output(self) -> str:
        self.log_file.flush()
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def launch(tmp_path_factory):
    """`launch(*argv, env=..., wait=True, host=...)` runs `python *argv` as a server and stops it
    after."""
    started: list[ServerProcess] = []

    def _launch(*argv: str, env: dict | None = None, wait: bool = True,
                host: str = "127.0.0.1") -> ServerProcess:
        log = tmp_path_factory.mktemp("server") / "server.log"
        server = ServerProcess([sys.executable, *argv], log, env, host).start()
        started.append(server)
        if wait:
            server.wait_ready()
        return server

    yield _launch
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def iris_server(launch) -> ServerProcess:
    return launch("-m", "sklearnserver", "--model_name", "iris",
                  "--model_dir", str(EXAMPLES / "sklearn-iris"))
