"""Where a load may fetch from: nowhere by default; with --allowed_storage_uris, only under
those prefixes, however the URI is spelled, and redirects too. A refused URI fetches nothing:
the source records every request it gets."""

import os
import time

import pytest
import requests
from security_helpers import IRIS, ROW, evil_pickle, iris_folder


@pytest.fixture(scope="module")
def served(source, tmp_path_factory):
    """The source's files, and a local folder of models (one allowed, one not)."""
    source.files["/models/model.joblib"] = IRIS.read_bytes()
    source.files["/secret/model.joblib"] = IRIS.read_bytes()
    source.files["/models-evil/model.joblib"] = IRIS.read_bytes()
    local = tmp_path_factory.mktemp("local")
    iris_folder(local / "allowed" / "m")
    iris_folder(local / "outside")
    os.symlink(local / "outside", local / "allowed" / "link")
    return local


@pytest.fixture(scope="module")
def server(launch, source, served, tmp_path_factory):
    """Allowed: the source's /models (no trailing slash: whole segments) and a local folder."""
    repository = tmp_path_factory.mktemp("repo")
    return launch("-m", "sklearnserver", "--model_dir", str(repository), "--multi_model",
                  "--allowed_storage_uris", f"{source.url}/models,{served / 'allowed'}")


def load(server, name, uri):
    return requests.post(f"{server.url}/v2/repository/models/{name}/load",
                         json={"parameters": {"storage_uri": uri}}, timeout=60)


def predict(server, name):
    return requests.post(f"{server.url}/v1/models/{name}:predict", json={"instances": ROW},
                         timeout=10)


def test_by_default_no_storage_uri_is_fetched(launch, source, tmp_path):
    server = launch("-m", "sklearnserver", "--model_dir", str(tmp_path), "--multi_model")
    source.asked.clear()
    for uri in (f"{source.url}/models/model.joblib", "s3://models/iris", str(IRIS.parent)):
        refused = load(server, "iris", uri)
        assert refused.status_code == 403
        assert "--allowed_storage_uris" in refused.json()["error"]
    assert source.asked == [] and not (tmp_path / "iris").exists()


def test_a_uri_under_a_prefix_is_fetched(server, source):
    source.asked.clear()
    assert load(server, "fetched", f"{source.url}/models/model.joblib").status_code == 200
    assert source.asked == ["/models/model.joblib"]
    assert predict(server, "fetched").json() == {"predictions": [1]}
    # Spelled otherwise, still the same place.
    for uri in (f"http://127.0.0.1:{source.port}/%6Dodels/model.joblib",
                f"HTTP://127.0.0.1:{source.port}/models/model.joblib?v=2"):
        assert load(server, "respelled", uri).status_code == 200, uri


@pytest.mark.parametrize("trick", [
    "{url}/models-evil/model.joblib",  # a prefix is whole segments
    "{url}/models/../secret/model.joblib",
    "{url}/models/%2e%2e/secret/model.joblib",
    "{url}/models/%252e%252e/secret/model.joblib",
    "{url}/models/..%5csecret/model.joblib",
    "http://127.0.0.1:{port}@localhost:{port}/models/model.joblib",  # user information
    "http://localhost:{port}/models/model.joblib",  # another host, if the same machine
])
def test_tricks_are_refused_and_fetch_nothing(server, source, trick):
    uri = trick.format(url=source.url, port=source.port)
    source.asked.clear()
    refused = load(server, "tricked", uri)
    assert refused.status_code == 403, refused.text
    assert source.asked == []
    assert predict(server, "tricked").status_code == 404


def test_a_redirect_is_followed_only_where_loads_may_fetch(server, source):
    """Each hop is checked before it is asked for: the source never sees the refused one."""
    source.redirects["/models/away"] = f"{source.url}/secret/model.joblib"
    source.redirects["/models/host"] = f"http://localhost:{source.port}/models/model.joblib"
    source.redirects["/models/moved"] = "/models/model.joblib"
    for path in ("/models/away", "/models/host"):
        source.asked.clear()
        refused = load(server, "redirected", source.url + path)
        assert refused.status_code == 403, refused.text
        assert "which is not allowed" in refused.json()["error"]
        assert source.asked == [path]
    assert predict(server, "redirected").status_code == 404
    source.asked.clear()
    assert load(server, "redirected", f"{source.url}/models/moved").status_code == 200
    assert source.asked == ["/models/moved", "/models/model.joblib"]


def test_local_paths_are_refused_outside_the_folder(server, served):
    assert load(server, "local", str(served / "allowed" / "m")).status_code == 200
    assert predict(server, "local").json() == {"predictions": [1]}
    for uri in (str(served / "outside"), f"{served / 'allowed'}/../outside",
                f"file://{served / 'allowed'}/%2e%2e/outside", str(served / "allowed" / "link"),
                f"file://{served / 'allowed-not'}"):
        assert load(server, "escaped", uri).status_code == 403, uri
    assert predict(server, "escaped").status_code == 404


def test_a_pickle_is_never_unpickled_unless_its_uri_is_allowed(launch, source, server,
                                                               tmp_path):
    proof = tmp_path / "ran"
    source.files["/evil/model.joblib"] = evil_pickle(proof)
    source.files["/models/evil/model.joblib"] = evil_pickle(proof)
    source.asked.clear()
    assert load(server, "evil", f"{source.url}/evil/model.joblib").status_code == 403
    assert source.asked == []
    time.sleep(0.5)
    assert not proof.exists()
    # The same pickle from where loads may fetch: loaded, so it runs (the test can tell), and
    # the server says that pickles from the API run code.
    load(server, "evil", f"{source.url}/models/evil/model.joblib")
    assert proof.read_text() == "ran"
    assert (f"model.joblib came from {source.url}/models/evil/model.joblib through the "
            "repository API and is a pickle") in server.output()
