"""Who may call the repository API (index, load, unload), over REST and gRPC: loopback only by
default; with an admin token, whoever sends it. Inference, health and metadata stay open."""

import os
import subprocess
import sys

import grpc
import pytest
import requests
from security_helpers import ROW, iris_folder

from modelserver.core.access import AccessPolicy, Caller, is_loopback
from modelserver.errors import Forbidden, Unauthenticated
from modelserver.protocol.proto import grpc_service_pb2 as pb
from modelserver.protocol.proto import grpc_service_pb2_grpc as pb_grpc

TOKEN = "s3cr3t-admin-token-0123456789"


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    iris_folder(root / "iris")
    iris_folder(root / "spare")
    return root


@pytest.fixture(scope="module")
def open_server(launch, repository):
    """No token: loopback only. Listening on every address, so that a client here can reach
    it as a peer that is not on loopback."""
    return launch("-m", "sklearnserver", "--model_dir", str(repository), host="0.0.0.0")


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("secret") / "token"
    path.write_text(TOKEN + "\n")  # as `kubectl create secret --from-file` keeps a newline
    return path


@pytest.fixture(scope="module")
def token_server(launch, repository, token_file):
    return launch("-m", "sklearnserver", "--model_dir", str(repository), "--admin_token_file",
                  str(token_file), host="0.0.0.0")


def at(server, address: str) -> str:
    return f"http://{address}:{server.http_port}"


def index(url: str, token: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.post(url + "/v2/repository/index", headers=headers, timeout=10)


def grpc_index(target: str, metadata=()):
    with grpc.insecure_channel(target) as channel:
        return pb_grpc.GRPCInferenceServiceStub(channel).RepositoryIndex(
            pb.RepositoryIndexRequest(), metadata=metadata, timeout=10)


def grpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_loopback_peers_may_call(open_server):
    assert index(open_server.url).status_code == 200
    assert [m.name for m in grpc_index(open_server.grpc_target).models] == ["iris", "spare"]


def test_a_peer_off_loopback_is_refused_with_how_to_allow_it(open_server, outside_address):
    url = at(open_server, outside_address)
    refused = index(url)
    assert refused.status_code == 403
    assert "--admin_token_file" in refused.json()["error"]
    assert outside_address in refused.json()["error"]
    unload = requests.post(url + "/v2/repository/models/spare/unload", timeout=10)
    load = requests.post(url + "/v2/repository/models/spare/load", timeout=10)
    assert (unload.status_code, load.status_code) == (403, 403)
    assert requests.post(open_server.url + "/v1/models/spare:predict", json={"instances": ROW},
                         timeout=10).status_code == 200  # the unload did not happen

    error = grpc_error(lambda: grpc_index(f"{outside_address}:{open_server.grpc_port}"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "--admin_token_file" in error.details()
    with grpc.insecure_channel(f"{outside_address}:{open_server.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        unload = grpc_error(lambda: stub.RepositoryModelUnload(
            pb.RepositoryModelUnloadRequest(model_name="spare"), timeout=10))
        assert unload.code() == grpc.StatusCode.PERMISSION_DENIED
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready  # stays open


@pytest.mark.parametrize("header", ["X-Forwarded-For", "Forwarded", "X-Envoy-External-Address"])
def test_a_call_a_proxy_passed_on_is_refused_though_the_proxy_is_local(open_server, header):
    """Knative's queue-proxy and Istio's sidecar reach the server over loopback for clients
    anywhere: what they pass on says so, and is refused without a token."""
    headers = {header: "203.0.113.7"}
    refused = requests.post(open_server.url + "/v2/repository/models/spare/unload",
                            headers=headers, timeout=10)
    assert refused.status_code == 403 and "through a proxy" in refused.json()["error"]
    assert requests.post(open_server.url + "/v1/models/spare:predict", json={"instances": ROW},
                         headers=headers, timeout=10).status_code == 200  # still served
    error = grpc_error(lambda: grpc_index(open_server.grpc_target,
                                          metadata=[(header.lower(), "203.0.113.7")]))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "through a proxy" in error.details()


def test_the_policy_without_a_network(tmp_path):
    """The same rules as the tests over sockets check, on Caller values alone (those with a
    second address run only where a network namespace can be made)."""
    open_policy = AccessPolicy()
    open_policy.check(Caller("127.0.0.1"))
    for caller in (Caller("192.0.2.1"), Caller(None), Caller("127.0.0.1", forwarded=True)):
        with pytest.raises(Forbidden):
            open_policy.check(caller)
    (tmp_path / "token").write_text(TOKEN)
    guarded = AccessPolicy(tmp_path / "token")
    guarded.check(Caller("192.0.2.1", f"Bearer {TOKEN}".encode(), forwarded=True))
    for authorization in (None, b"Bearer wrong", TOKEN.encode(), f"Basic {TOKEN}".encode()):
        with pytest.raises(Unauthenticated):
            guarded.check(Caller("127.0.0.1", authorization))


def test_inference_health_and_metadata_stay_open(open_server, outside_address):
    url = at(open_server, outside_address)
    assert requests.get(url + "/v2/health/ready", timeout=10).status_code == 200
    assert requests.get(url + "/v2/models/iris", timeout=10).status_code == 200
    reply = requests.post(url + "/v1/models/iris:predict", json={"instances": ROW}, timeout=10)
    assert reply.json() == {"predictions": [1]}


@pytest.mark.parametrize("where", ["loopback", "outside"])
def test_the_token_is_needed_from_everywhere(token_server, outside_address, where):
    url = token_server.url if where == "loopback" else at(token_server, outside_address)
    for token in (None, "wrong", TOKEN[:-1], TOKEN + "x", ""):
        refused = index(url, token)
        assert refused.status_code == 401, token
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert "admin token" in refused.json()["error"]
    assert index(url, TOKEN).status_code == 200
    basic = requests.post(url + "/v2/repository/index", timeout=10,
                          headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401
    load = requests.post(url + "/v2/repository/models/spare/load", timeout=60,
                         headers={"Authorization": f"bearer {TOKEN}"})  # any case, as HTTP says
    assert load.status_code == 200, load.text


@pytest.mark.parametrize("where", ["loopback", "outside"])
def test_the_token_over_grpc(token_server, outside_address, where):
    host = "127.0.0.1" if where == "loopback" else outside_address
    target = f"{host}:{token_server.grpc_port}"
    for metadata in ((), (("authorization", "Bearer wrong"),)):
        error = grpc_error(lambda metadata=metadata: grpc_index(target, metadata))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_index(target, (("authorization", f"Bearer {TOKEN}"),)).models


def test_a_replaced_token_file_is_read_again(token_server, token_file):
    """As the kubelet replaces a mounted Secret: a new file in the old one's place."""
    new = token_file.with_name("token.new")
    new.write_text("the-next-token")
    os.replace(new, token_file)
    try:
        assert index(token_server.url, TOKEN).status_code == 401
        assert index(token_server.url, "the-next-token").status_code == 200
    finally:
        new.write_text(TOKEN)
        os.replace(new, token_file)
    assert index(token_server.url, TOKEN).status_code == 200


def test_a_missing_or_empty_token_file_refuses_everyone(token_server, token_file):
    token_file.rename(token_file.with_name("away"))
    try:
        assert index(token_server.url, TOKEN).status_code == 401
    finally:
        token_file.with_name("away").rename(token_file)
    assert index(token_server.url, TOKEN).status_code == 200
    token_file.write_text("")
    try:
        assert index(token_server.url, TOKEN).status_code == 401
        assert index(token_server.url, "").status_code == 401
    finally:
        token_file.write_text(TOKEN)
    assert index(token_server.url, TOKEN).status_code == 200
    assert "is empty: every repository call is refused" in token_server.output()


def test_the_token_is_never_logged(token_server):
    index(token_server.url, TOKEN)
    index(token_server.url, "wrong-guess-of-the-token")
    output = token_server.output()
    assert TOKEN not in output and "wrong-guess-of-the-token" not in output
    assert "admin token read from" in output


@pytest.mark.parametrize("content", [None, ""])
def test_the_server_refuses_to_start_without_a_token(tmp_path, content):
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    result = subprocess.run([sys.executable, "-m", "sklearnserver", "--model_dir",
                             str(tmp_path), "--admin_token_file", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    expected = "is empty" if content is not None else "cannot be read"
    assert f"the admin token file {path} {expected}" in result.stderr


@pytest.mark.parametrize("address,loopback", [
    ("127.0.0.1", True), ("127.9.8.7", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("192.0.2.2", False), ("::ffff:192.0.2.2", False), ("fd00::2", False), ("0.0.0.0", False),
    ("", False), (None, False), ("localhost", False),
])
def test_what_counts_as_loopback(address, loopback):
    assert is_loopback(address) is loopback
