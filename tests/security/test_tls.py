"""TLS and mutual TLS on the REST and gRPC ports, with curl, openssl, requests and tritonclient;
certificates replaced on disk are served to new connections within seconds."""

import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from certs import Authority
from cryptography import x509
from security_helpers import IRIS, ROW

from modelserver.protocol.proto import grpc_service_pb2 as pb
from modelserver.protocol.proto import grpc_service_pb2_grpc as pb_grpc

ROTATION_SECONDS = 5  # a replaced certificate reaches new connections within this


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a client certificate it signed, and one another CA signed."""
    folder = tmp_path_factory.mktemp("pki")
    ca = Authority.make()
    rogue = Authority.make("rogue CA")
    ca.write(folder / "ca.pem")
    ca.issue("client", folder, server=False)
    rogue.issue("rogue", folder, server=False)
    return folder, ca


def publish(secret: Path, ca: Authority, serial: int) -> None:
    """Mount a certificate as the kubelet mounts a Secret: the files are links into `..data`,
    itself a link to a folder of this version, swapped in one rename."""
    version = secret / f"..{serial}"
    version.mkdir(parents=True)
    ca.issue("tls", version, serial=serial)
    os.rename(version / "tls.pem", version / "tls.crt")
    (secret / "..data_tmp").symlink_to(version.name)
    os.rename(secret / "..data_tmp", secret / "..data")
    for name in ("tls.crt", "tls.key"):
        if not (secret / name).is_symlink():
            (secret / name).symlink_to(f"..data/{name}")


def launch_tls(launch, *flags: str):
    server = launch("-m", "sklearnserver", "--model_name", "iris", "--model_dir",
                    str(IRIS.parent), *flags, wait=False)
    server.url = f"https://127.0.0.1:{server.http_port}"
    return server


def wait_ready(server, **tls) -> None:
    server._wait(lambda: requests.get(server.url + "/v2/health/ready", timeout=2,
                                      **tls).status_code == 200, 120)


@pytest.fixture(scope="module")
def tls_server(launch, pki, tmp_path_factory):
    folder, ca = pki
    secret = tmp_path_factory.mktemp("secret")
    publish(secret, ca, serial=1001)
    server = launch_tls(launch, "--ssl_certfile", str(secret / "tls.crt"), "--ssl_keyfile",
                        str(secret / "tls.key"))
    wait_ready(server, verify=str(folder / "ca.pem"))
    server.secret = secret
    return server


@pytest.fixture(scope="module")
def mtls_server(launch, pki, tmp_path_factory):
    folder, ca = pki
    files = tmp_path_factory.mktemp("files")
    ca.issue("server", files, serial=2001)
    server = launch_tls(launch, "--ssl_certfile", str(files / "server.pem"), "--ssl_keyfile",
                        str(files / "server.key"), "--ssl_ca_certs", str(folder / "ca.pem"))
    wait_ready(server, verify=str(folder / "ca.pem"),
               cert=(str(folder / "client.pem"), str(folder / "client.key")))
    server.files = files
    return server


def served_serial(port: int, pki_folder: Path, alpn: str, client: str | None = None) -> int:
    """The serial of the certificate a new connection to `port` is given."""
    context = ssl.create_default_context(cafile=pki_folder / "ca.pem")
    context.set_alpn_protocols([alpn])
    if client:
        context.load_cert_chain(pki_folder / f"{client}.pem", pki_folder / f"{client}.key")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True,
                          text=True, timeout=30)


def triton_row():
    inputs = [grpcclient.InferInput("input-0", [1, 4], "FP64")]
    inputs[0].set_data_from_numpy(np.array(ROW, np.float64))
    return inputs


def test_rest_over_tls(tls_server, pki):
    folder, _ = pki
    url, ca = tls_server.url, str(folder / "ca.pem")
    reply = requests.post(url + "/v1/models/iris:predict", json={"instances": ROW}, verify=ca,
                          timeout=10)
    assert reply.json() == {"predictions": [1]}
    done = curl("--cacert", ca, url + "/v1/models/iris:predict", "-d",
                '{"instances": [[6.8, 2.8, 4.8, 1.4]]}')
    assert done.returncode == 0 and done.stdout == '{"predictions":[1]}', done.stderr
    assert curl(url + "/v2/health/ready").returncode == 60  # an unknown CA: refused by curl
    with pytest.raises(requests.ConnectionError):  # plain text to the TLS port goes nowhere
        requests.get(f"http://127.0.0.1:{tls_server.http_port}/v2/health/ready", timeout=10)
    handshake = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{tls_server.http_port}", "-CAfile",
         str(ca), "-alpn", "http/1.1", "-verify_return_error"],
        input="", capture_output=True, text=True, timeout=30)
    assert "Verify return code: 0 (ok)" in handshake.stdout
    assert "ALPN protocol: http/1.1" in handshake.stdout


def test_tritonclient_over_tls(tls_server, pki):
    folder, _ = pki
    ca = str(folder / "ca.pem")
    over_http = httpclient.InferenceServerClient(f"127.0.0.1:{tls_server.http_port}", ssl=True,
                                                 ssl_options={"ca_certs": ca})
    assert over_http.is_server_ready()
    inputs = [httpclient.InferInput("input-0", [1, 4], "FP64")]
    inputs[0].set_data_from_numpy(np.array(ROW, np.float64))
    assert over_http.infer("iris", inputs).as_numpy("predict").tolist() == [1]
    over_grpc = grpcclient.InferenceServerClient(f"localhost:{tls_server.grpc_port}", ssl=True,
                                                 root_certificates=ca)
    assert over_grpc.is_server_ready()
    assert over_grpc.infer("iris", triton_row()).as_numpy("predict").tolist() == [1]
    with grpc.insecure_channel(tls_server.grpc_target) as channel:  # plain text is refused
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.GRPCInferenceServiceStub(channel).ServerReady(pb.ServerReadyRequest(),
                                                                  timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_needs_a_client_certificate_the_ca_signed(mtls_server, pki):
    folder, _ = pki
    ca, url = str(folder / "ca.pem"), mtls_server.url
    client = ["--cert", str(folder / "client.pem"), "--key", str(folder / "client.key")]
    rogue = ["--cert", str(folder / "rogue.pem"), "--key", str(folder / "rogue.key")]
    assert curl("--cacert", ca, *client, url + "/v2/health/ready").stdout == '{"ready":true}'
    assert curl("--cacert", ca, url + "/v2/health/ready").returncode != 0
    assert curl("--cacert", ca, *rogue, url + "/v2/health/ready").returncode != 0

    over_http = httpclient.InferenceServerClient(
        f"127.0.0.1:{mtls_server.http_port}", ssl=True,
        ssl_options={"ca_certs": ca, "certfile": str(folder / "client.pem"),
                     "keyfile": str(folder / "client.key")})
    assert over_http.is_server_ready()

    def grpc_client(name=None):
        pair = {} if name is None else {
            "private_key": (folder / f"{name}.key").read_bytes(),
            "certificate_chain": (folder / f"{name}.pem").read_bytes()}
        creds = grpc.ssl_channel_credentials(Path(ca).read_bytes(), **pair)
        return grpcclient.InferenceServerClient(f"localhost:{mtls_server.grpc_port}",
                                                creds=creds)

    assert grpc_client("client").infer("iris", triton_row()).as_numpy("predict").tolist() == [1]
    for name in (None, "rogue"):
        with pytest.raises(Exception):  # noqa: B017 - the handshake fails, as UNAVAILABLE
            grpc_client(name).is_server_ready(client_timeout=5)


def test_a_rotated_certificate_reaches_new_connections(tls_server, pki):
    folder, ca = pki
    ports = {"REST": (tls_server.http_port, "http/1.1"), "gRPC": (tls_server.grpc_port, "h2")}
    assert {served_serial(port, folder, alpn) for port, alpn in ports.values()} == {1001}
    kept = requests.Session()  # a connection opened before keeps working
    ready, ca_file = tls_server.url + "/v2/health/ready", str(folder / "ca.pem")
    assert kept.get(ready, verify=ca_file, timeout=10).status_code == 200
    publish(tls_server.secret, ca, serial=1002)
    for what, (port, alpn) in ports.items():
        deadline = time.monotonic() + ROTATION_SECONDS
        while served_serial(port, folder, alpn) != 1002:
            assert time.monotonic() < deadline, f"{what} still serves the old certificate"
            time.sleep(0.2)
    assert kept.get(ready, verify=ca_file, timeout=10).status_code == 200
    over_grpc = grpcclient.InferenceServerClient(f"localhost:{tls_server.grpc_port}", ssl=True,
                                                 root_certificates=str(folder / "ca.pem"))
    assert over_grpc.is_server_ready()


def test_a_half_replaced_pair_keeps_the_last_good_one(mtls_server, pki):
    """A new certificate whose key has not arrived yet: the old pair serves on until it has."""
    folder, ca = pki
    files = mtls_server.files
    staged = files / "staged"
    staged.mkdir()
    ca.issue("server", staged, serial=2002)
    os.replace(staged / "server.pem", files / "server.pem")
    time.sleep(2.5)  # past the once-a-second look at the files
    for port, alpn in ((mtls_server.http_port, "http/1.1"), (mtls_server.grpc_port, "h2")):
        assert served_serial(port, folder, alpn, client="client") == 2001
    assert "still serving the certificate loaded before" in mtls_server.output()
    os.replace(staged / "server.key", files / "server.key")
    for port, alpn in ((mtls_server.http_port, "http/1.1"), (mtls_server.grpc_port, "h2")):
        deadline = time.monotonic() + ROTATION_SECONDS
        while served_serial(port, folder, alpn, client="client") != 2002:
            assert time.monotonic() < deadline
            time.sleep(0.2)


@pytest.mark.parametrize("flags,message", [
    (["--ssl_certfile", "{cert}"], "TLS needs both --ssl_certfile and --ssl_keyfile"),
    (["--ssl_certfile", "{cert}", "--ssl_keyfile", "{other_key}"], "do not load"),
    (["--ssl_certfile", "{cert}", "--ssl_keyfile", "{key}", "--ssl_ca_certs", "{missing}"],
     "do not load"),
])
def test_the_server_refuses_to_start_on_tls_files_that_do_not_work(pki, tmp_path, flags,
                                                                   message):
    folder, ca = pki
    ca.issue("one", tmp_path)
    ca.issue("two", tmp_path)
    names = {"cert": tmp_path / "one.pem", "key": tmp_path / "one.key",
             "other_key": tmp_path / "two.key", "missing": tmp_path / "absent.pem"}
    result = subprocess.run([sys.executable, "-m", "sklearnserver", "--model_dir",
                             str(IRIS.parent), *(f.format(**names) for f in flags)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr, result.stderr

