"""Which URIs a list of prefixes allows, and redirects checked hop by hop before they are
followed."""

import os

import pytest

from modelstorage import Refused, UriPrefixes, download


@pytest.fixture
def prefixes(tmp_path):
    (tmp_path / "allowed").mkdir()
    return UriPrefixes(["s3://models/", "gs://team/prod", "http://Models.Example/repo/",
                        "https://secure.example:8443/m", "hf://org/", str(tmp_path / "allowed"),
                        "pvc://claim/shared"])


@pytest.mark.parametrize("uri", [
    "s3://models/a", "s3://models", "s3://models/", "S3://MODELS/a/b", "s3://models//a",
    "gs://team/prod", "gs://team/prod/", "gs://team/prod/v1/model.bst",
    "http://models.example/repo/m.joblib", "HTTP://MODELS.EXAMPLE/repo/m.joblib",
    "http://models.example:80/repo/m.joblib", "http://models.example./repo/m.joblib",
    "http://models.example/%72epo/m.joblib", "http://models.example/repo/m.joblib?x=1#y",
    "https://secure.example:8443/m/x", "hf://org/flower", "hf://org/flower:v2/sub",
])
def test_allowed(prefixes, uri):
    assert prefixes.allows(uri)


@pytest.mark.parametrize("uri", [
    "s3://models-evil/a", "s3://model/a", "s3://other/models/a", "gs://team/prod-old/x",
    "gs://team/production", "gs://team", "http://models.example/repository/x",
    "http://models.example:8080/repo/x", "https://models.example/repo/x",
    "http://evil.example/repo/x", "http://evil#@models.example/repo/",
    "https://secure.example/m/x", "https://secure.example:443/m/x", "hf://organisation/x",
    "s3:/models/a", "gs:team/prod/x", "gs://team/pro%64/x",  # an object key is as written
])
def test_refused(prefixes, uri):
    assert not prefixes.allows(uri)


@pytest.mark.parametrize("uri,why", [
    ("s3://models/../secrets/x", "'.' and '..'"),
    ("s3://models/a/./b", "'.' and '..'"),
    ("s3://models/%2e%2e/secrets", "'.' and '..'"),
    ("s3://models/%252E%252E/secrets", "'.' and '..'"),
    ("gs://team/prod/..\\x", "'.' and '..'"),
    ("http://models.example/repo/..;/x", "'.' and '..'"),
    ("http://models.example/repo/%2e%2e%2fsecret", "'.' and '..'"),
    ("http://ok@models.example/repo/x", "user information"),
    ("http://models.example/repo@evil.example/x", None),  # a path, not user information
    ("http://models.example:80@evil.example/repo/x", "user information"),
    ("http://models.example/repo/a b", "a space or a control character"),
    ("http://models.example/repo/a\r\nHost: evil", "a space or a control character"),
    ("http://mödels.example/repo/x", "not ASCII"),
    ("http://models.example:x/repo/x", "port is not a number"),
    ("s3://models/%" + "25" * 9 + "2e", "too many times"),  # %2e encoded 9 times over
])
def test_tricks_are_refused_with_the_reason(prefixes, uri, why):
    if why is None:
        assert not prefixes.allows(uri)
        return
    with pytest.raises(ValueError, match=why):
        prefixes.allows(uri)


def test_local_paths_are_compared_where_they_lead(prefixes, tmp_path, monkeypatch):
    allowed = tmp_path / "allowed"
    (allowed / "m").mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", allowed / "link")
    assert prefixes.allows(str(allowed / "m"))
    assert prefixes.allows(f"file://{allowed}/m")
    assert prefixes.allows(f"file:{allowed}/m")
    assert prefixes.allows(f"file://{allowed}/%6D")  # file:// paths are percent-decoded
    assert not prefixes.allows(str(tmp_path / "allowed-not"))
    assert not prefixes.allows(f"{allowed}/../outside")
    assert not prefixes.allows(f"file://{allowed}/%2e%2e/outside")
    assert not prefixes.allows(str(allowed / "link"))  # a symlink out of the folder
    assert not prefixes.allows(str(allowed / "link" / "x"))
    monkeypatch.chdir(allowed)
    assert prefixes.allows("m") and not prefixes.allows("../outside")
    monkeypatch.setenv("PVC_MOUNT_ROOT", str(tmp_path))
    assert prefixes.allows("pvc://any-claim/allowed/m")  # the claim's folder is what counts
    assert not prefixes.allows("pvc://claim/allowed/../outside")


def test_pvc_prefixes_are_where_the_claim_is_mounted(monkeypatch, tmp_path):
    monkeypatch.setenv("PVC_MOUNT_ROOT", str(tmp_path))
    shared = UriPrefixes(["pvc://claim/shared"])
    assert shared.allows(str(tmp_path / "shared" / "m")) and shared.allows("pvc://claim/shared/m")
    assert not shared.allows("pvc://claim/sharedx")


def test_no_prefixes_allow_nothing():
    assert not UriPrefixes([]) and not UriPrefixes(["", " "])
    assert not UriPrefixes([]).allows("s3://models/a")


@pytest.mark.parametrize("prefix,why", [
    ("http://ok@host/", "user information"), ("s3://models/../x", "'.' and '..'"),
    ("http://host/m?sig=1", "query or fragment"),
])
def test_unreadable_prefixes(prefix, why):
    with pytest.raises(ValueError, match=f"prefix '.*': .*{why}"):
        UriPrefixes([prefix])


def test_each_redirect_is_checked_before_it_is_followed(http_server, tmp_path):
    """The check sees each hop's target before it is asked for; one it refuses fails the
    download with nothing written. Without a check, redirects are followed as before."""
    url, files = http_server
    files["model.joblib"] = b"weights"
    asked = []

    def allow(target):
        asked.append(target)
        return "/files/" in target

    dest = download(f"{url}/redirect/model.joblib", tmp_path / "a", allow_redirect=allow)
    assert (dest / "model.joblib").read_bytes() == b"weights"
    assert asked == [f"{url}/files/model.joblib"]

    asked.clear()
    with pytest.raises(Refused, match=f"redirects to {url}/files/model.joblib, which is not "
                                      "allowed"):
        download(f"{url}/redirect/model.joblib", tmp_path / "b",
                 allow_redirect=lambda target: asked.append(target) and False)
    assert asked == [f"{url}/files/model.joblib"]
    assert not (tmp_path / "b").exists()
    assert download(f"{url}/redirect/model.joblib", tmp_path / "c").is_dir()
