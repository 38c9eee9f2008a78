"""S3 (moto), GCS (fake-gcs-server) and Azure Blob (azurite), each a real server on loopback."""

import hashlib
import os
from pathlib import Path

import pytest

from modelstorage import StorageError, download
from modelstorage.download import MARKER

FILES = {
    "models/m1/model.joblib": b"weights",
    "models/m1/nested/deeper/vocab.txt": b"words",
    "models/m1/name with spaces.txt": b"spaces",
    "models/m1-other/model.joblib": b"not this one",
    "models/single.pkl": b"one object",
}
EXPECTED = {"model.joblib": b"weights", "nested/deeper/vocab.txt": b"words",
            "name with spaces.txt": b"spaces"}


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MARKER}


# -- S3 -------------------------------------------------------------------------------------------
@pytest.fixture
def bucket(s3):
    name = f"bucket-{os.urandom(4).hex()}"
    s3.create_bucket(Bucket=name)
    for key, data in FILES.items():
        s3.put_object(Bucket=name, Key=key, Body=data)
    return name


def test_s3_prefix_is_a_folder_not_a_string_prefix(bucket, tmp_path):
    assert tree(download(f"s3://{bucket}/models/m1", tmp_path / "a")) == EXPECTED
    assert tree(download(f"s3://{bucket}/models/m1/", tmp_path / "b")) == EXPECTED


def test_s3_single_object(bucket, tmp_path):
    assert tree(download(f"s3://{bucket}/models/single.pkl", tmp_path / "d")) == {
        "single.pkl": b"one object"}


def test_s3_pagination_over_1000_objects(s3, tmp_path):
    s3.create_bucket(Bucket="many")
    for i in range(1100):
        s3.put_object(Bucket="many", Key=f"model/part-{i:04d}", Body=str(i).encode())
    files = tree(download("s3://many/model", tmp_path / "d"))
    assert len(files) == 1100 and files["part-1099"] == b"1099"


def test_s3_50_mb_object_is_checked(s3, tmp_path):
    data = os.urandom(50 * 1024 * 1024)
    s3.create_bucket(Bucket="big")
    s3.put_object(Bucket="big", Key="model/weights.bin", Body=data)
    dest = download("s3://big/model", tmp_path / "d")
    assert hashlib.sha256((dest / "weights.bin").read_bytes()).digest() == \
        hashlib.sha256(data).digest()


@pytest.mark.parametrize("path,message", [
    ("models/absent", "no objects under s3://{b}/models/absent/"),
    ("", None),
])
def test_s3_empty_prefix_is_a_clear_error(s3, tmp_path, path, message):
    s3.create_bucket(Bucket="empty")
    with pytest.raises(StorageError, match="no objects under s3://empty/"):
        download(f"s3://empty/{path}", tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_s3_missing_bucket_fails_fast(s3, tmp_path):
    with pytest.raises(StorageError, match="s3://no-such-bucket/m.*NoSuchBucket"):
        download("s3://no-such-bucket/m", tmp_path / "d")


def test_s3_kserve_endpoint_variables(bucket, tmp_path, monkeypatch, s3_endpoint):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("S3_ENDPOINT", s3_endpoint.removeprefix("http://"))
    monkeypatch.setenv("S3_USE_HTTPS", "0")
    monkeypatch.setenv("S3_VERIFY_SSL", "0")
    assert tree(download(f"s3://{bucket}/models/m1", tmp_path / "d")) == EXPECTED


def test_s3_anonymous_access(s3, bucket, tmp_path, monkeypatch):
    s3.put_bucket_acl(Bucket=bucket, ACL="public-read")
    for key in FILES:
        s3.put_object_acl(Bucket=bucket, Key=key, ACL="public-read")
    monkeypatch.setenv("awsAnonymousCredential", "true")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert tree(download(f"s3://{bucket}/models/m1", tmp_path / "d")) == EXPECTED


def test_s3_object_names_cannot_escape(s3, tmp_path):
    s3.create_bucket(Bucket="hostile")
    s3.put_object(Bucket="hostile", Key="m/../../escape.txt", Body=b"x")
    with pytest.raises(StorageError, match="leaves the model directory"):
        download("s3://hostile/m", tmp_path / "d")
    assert not (tmp_path / "escape.txt").exists()


# -- GCS ------------------------------------------------------------------------------------------
@pytest.fixture
def gcs_bucket(gcs):
    name = f"bucket-{os.urandom(4).hex()}"
    bucket = gcs.create_bucket(name)
    for key, data in FILES.items():
        bucket.blob(key).upload_from_string(data)
    return name


def test_gcs_prefix_and_single_object(gcs_bucket, tmp_path):
    assert tree(download(f"gs://{gcs_bucket}/models/m1", tmp_path / "a")) == EXPECTED
    assert tree(download(f"gs://{gcs_bucket}/models/single.pkl", tmp_path / "b")) == {
        "single.pkl": b"one object"}


def test_gcs_missing_prefix_and_bucket(gcs_bucket, tmp_path):
    with pytest.raises(StorageError, match=f"no objects under gs://{gcs_bucket}/models/none/"):
        download(f"gs://{gcs_bucket}/models/none", tmp_path / "a")
    with pytest.raises(StorageError, match="gs://no-such-bucket-x/m"):
        download("gs://no-such-bucket-x/m", tmp_path / "b")
    assert not any(tmp_path.iterdir())


# -- Azure ----------------------------------------------------------------------------------------
@pytest.fixture
def container(azure):
    name = f"c{os.urandom(4).hex()}"
    client = azure.create_container(name)
    for key, data in FILES.items():
        client.upload_blob(key, data)
    return name


def azure_uri(container: str, path: str) -> str:
    return f"https://devstoreaccount1.blob.core.windows.net/{container}/{path}"


def test_azure_prefix_and_single_blob(container, tmp_path):
    assert tree(download(azure_uri(container, "models/m1"), tmp_path / "a")) == EXPECTED
    assert tree(download(azure_uri(container, "models/single.pkl"), tmp_path / "b")) == {
        "single.pkl": b"one object"}


def test_azure_wrong_key_and_missing_container(container, azurite, tmp_path, monkeypatch):
    with pytest.raises(StorageError, match="no blobs under"):
        download(azure_uri(container, "models/none"), tmp_path / "a")
    with pytest.raises(StorageError, match="ContainerNotFound|does not exist"):
        download(azure_uri("nosuchcontainer", "m"), tmp_path / "b")
    wrong = azurite.replace("AccountKey=", "AccountKey=AAAA")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", wrong)
    with pytest.raises(StorageError, match=azure_uri(container, "models/m1")):
        download(azure_uri(container, "models/m1"), tmp_path / "c")
    assert not any(tmp_path.iterdir())
