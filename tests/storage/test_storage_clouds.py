"""S3 (moto), GCS (fake-gcs-server) and Azure Blob (azurite), each a real server on loopback."""

import datetime
import hashlib
import io
import os
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from modelstorage import StorageError, download
from modelstorage.atomic import MARKER, TEMP

FILES = {
    "models/m1/model.joblib": b"weights",
    "models/m1/nested/deeper/vocab.txt": b"words",
    "models/m1/name with spaces.txt": b"spaces",
    "models/m1-other/model.joblib": b"not this one",  # shares the string prefix "models/m1"
    "models/single.pkl": b"one object",
}
EXPECTED = {"model.joblib": b"weights", "nested/deeper/vocab.txt": b"words",
            "name with spaces.txt": b"spaces"}


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MARKER}


def unique(prefix: str) -> str:
    return f"{prefix}{os.urandom(4).hex()}"


# -- S3 -------------------------------------------------------------------------------------------
@pytest.fixture
def bucket(s3):
    name = unique("bucket-")
    s3.create_bucket(Bucket=name)
    for key, data in FILES.items():
        s3.put_object(Bucket=name, Key=key, Body=data)
    return name


def test_s3_prefix_is_a_folder_not_a_string_prefix(bucket, tmp_path):
    assert tree(download(f"s3://{bucket}/models/m1", tmp_path / "a")) == EXPECTED
    assert tree(download(f"s3://{bucket}/models/m1/", tmp_path / "b")) == EXPECTED
    whole = tree(download(f"s3://{bucket}", tmp_path / "c"))
    assert set(whole) == set(FILES)


def test_s3_single_object(bucket, tmp_path):
    assert tree(download(f"s3://{bucket}/models/single.pkl", tmp_path / "d")) == {
        "single.pkl": b"one object"}


def test_s3_pagination_over_1000_objects(s3, tmp_path):
    s3.create_bucket(Bucket="many")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket="many", Key=f"model/part-{i:04d}",
                                              Body=str(i).encode()), range(1100)))
    files = tree(download("s3://many/model", tmp_path / "d"))
    assert len(files) == 1100 and files["part-0000"] == b"0" and files["part-1099"] == b"1099"


def test_s3_large_objects_single_and_multipart(s3, tmp_path):
    """50 MB uploaded in one part (its ETag is the MD5, which is checked) and 20 MB uploaded in
    parts (downloaded in ranged parts too)."""
    from boto3.s3.transfer import TransferConfig

    single, parts = os.urandom(50 << 20), os.urandom(20 << 20)
    s3.create_bucket(Bucket="big")
    s3.put_object(Bucket="big", Key="model/weights.bin", Body=single)
    s3.upload_fileobj(io.BytesIO(parts), "big", "model/shard.bin",
                      Config=TransferConfig(multipart_threshold=5 << 20,
                                            multipart_chunksize=5 << 20))
    assert "-" in s3.head_object(Bucket="big", Key="model/shard.bin")["ETag"]
    dest = download("s3://big/model", tmp_path / "d")
    for name, data in (("weights.bin", single), ("shard.bin", parts)):
        assert hashlib.sha256((dest / name).read_bytes()).digest() == \
            hashlib.sha256(data).digest()


@pytest.mark.parametrize("path", ["models/absent", "models/absent/", ""])
def test_s3_empty_prefix_is_a_clear_error(s3, tmp_path, path):
    s3.create_bucket(Bucket="empty")
    with pytest.raises(StorageError, match=f"^s3://empty/{path}: .*no objects under "
                                           f"s3://empty/{path.rstrip('/')}"):
        download(f"s3://empty/{path}", tmp_path / "d")
    assert not any(tmp_path.iterdir())  # no DEST, no staging folder


def test_s3_missing_key_and_bucket_fail_fast(bucket, tmp_path, retries):
    with pytest.raises(StorageError, match="no object of that name, and no"):
        download(f"s3://{bucket}/models/absent.pkl", tmp_path / "a")
    with pytest.raises(StorageError, match="^s3://no-such-bucket/m: NoSuchBucket"):
        download("s3://no-such-bucket/m", tmp_path / "b")
    assert not retries  # permanent: not retried
    with pytest.raises(StorageError, match="no bucket in the URI"):
        download("s3:///m", tmp_path / "c")


def test_s3_wrong_credentials_fail_fast(s3_checking_credentials, tmp_path, monkeypatch, retries):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_checking_credentials)
    with pytest.raises(StorageError, match="^s3://models/m1: InvalidAccessKeyId"):
        download("s3://models/m1", tmp_path / "d")
    assert not retries
    assert not any(tmp_path.iterdir())


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
    assert not (tmp_path / "escape.txt").exists() and not any(tmp_path.iterdir())


def test_s3_marker_skips_a_complete_download(s3, bucket, tmp_path):
    uri = f"s3://{bucket}/models/m1"
    dest = download(uri, tmp_path / "d")
    for key in FILES:
        s3.delete_object(Bucket=bucket, Key=key)
    assert tree(download(uri, dest)) == EXPECTED  # skipped: the objects are gone
    (dest / "model.joblib").unlink()  # no longer complete: fetched again, and now missing
    with pytest.raises(StorageError, match="no objects under"):
        download(uri, dest)
    assert tree(dest) == {k: v for k, v in EXPECTED.items() if k != "model.joblib"}


def test_s3_into_an_existing_folder(bucket, tmp_path):
    """DEST as a volume mount: it stays (same inode), its contents are replaced, and what an
    interrupted download left in it is cleaned up."""
    dest = tmp_path / "models"
    dest.mkdir()
    (dest / "old.bin").write_bytes(b"old")
    (dest / f"{TEMP}abcd1234").mkdir()
    inode = dest.stat().st_ino
    download(f"s3://{bucket}/models/m1", dest)
    assert tree(dest) == EXPECTED and dest.stat().st_ino == inode
    assert sorted(p.name for p in dest.iterdir() if p.name.startswith(".")) == [MARKER]
    assert [p.name for p in tmp_path.iterdir()] == ["models"]


def test_s3_archive_is_unpacked(s3, tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("model/weights.bin")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    s3.create_bucket(Bucket="archives")
    s3.put_object(Bucket="archives", Key="m/model.tar.gz", Body=buffer.getvalue())
    assert tree(download("s3://archives/m", tmp_path / "d")) == {"model/weights.bin": b"abc"}


# -- GCS ------------------------------------------------------------------------------------------
@pytest.fixture
def gcs_bucket(gcs):
    name = unique("bucket-")
    bucket = gcs.create_bucket(name)
    for key, data in FILES.items():
        bucket.blob(key).upload_from_string(data)
    return name


def test_gcs_prefix_and_single_object(gcs_bucket, tmp_path):
    assert tree(download(f"gs://{gcs_bucket}/models/m1", tmp_path / "a")) == EXPECTED
    assert tree(download(f"gs://{gcs_bucket}/models/m1/", tmp_path / "b")) == EXPECTED
    assert tree(download(f"gs://{gcs_bucket}/models/single.pkl", tmp_path / "c")) == {
        "single.pkl": b"one object"}


def test_gcs_missing_prefix_key_and_bucket(gcs_bucket, tmp_path, retries):
    with pytest.raises(StorageError, match=f"no objects under gs://{gcs_bucket}/models/none/"):
        download(f"gs://{gcs_bucket}/models/none", tmp_path / "a")
    with pytest.raises(StorageError, match="^gs://no-such-bucket-x/m: .*[Nn]ot [Ff]ound"):
        download("gs://no-such-bucket-x/m", tmp_path / "b")
    assert not retries
    assert not any(tmp_path.iterdir())


def test_gcs_marker_skips_a_complete_download(gcs, gcs_bucket, tmp_path):
    uri = f"gs://{gcs_bucket}/models/m1"
    dest = download(uri, tmp_path / "d")
    for blob in gcs.list_blobs(gcs_bucket):
        blob.delete()
    assert tree(download(uri, dest)) == EXPECTED


# -- Azure ----------------------------------------------------------------------------------------
@pytest.fixture
def container(azure):
    name = unique("c")
    client = azure.create_container(name)
    for key, data in FILES.items():
        client.upload_blob(key, data)
    return name


def azure_uri(container: str, path: str) -> str:
    return f"https://devstoreaccount1.blob.core.windows.net/{container}/{path}"


def test_azure_prefix_and_single_blob(container, tmp_path):
    assert tree(download(azure_uri(container, "models/m1"), tmp_path / "a")) == EXPECTED
    assert tree(download(azure_uri(container, "models/m1/"), tmp_path / "b")) == EXPECTED
    assert tree(download(azure_uri(container, "models/single.pkl"), tmp_path / "c")) == {
        "single.pkl": b"one object"}


def test_azure_missing_prefix_and_container(container, tmp_path):
    with pytest.raises(StorageError,
                       match=f"no blob of that name, and no blobs under {container}/models/none/"):
        download(azure_uri(container, "models/none"), tmp_path / "a")
    with pytest.raises(StorageError, match="specified container does not exist"):
        download(azure_uri("nosuchcontainer", "m"), tmp_path / "b")
    assert not any(tmp_path.iterdir())


def test_azure_wrong_key_fails_fast(container, azurite, tmp_path, monkeypatch, retries):
    uri = azure_uri(container, "models/m1")
    wrong = azurite.replace("AccountKey=", "AccountKey=AAAA")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", wrong)
    with pytest.raises(StorageError, match=f"^{uri}: Server failed to authenticate"):
        download(uri, tmp_path / "a")
    assert not retries  # permanent: not retried
    assert not any(tmp_path.iterdir())


@pytest.fixture
def container_sas(azure_account):
    """`container_sas(container, read=True, ...)`: a SAS for it, signed with the account key."""
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    def sas(container: str, **permissions) -> str:
        return generate_container_sas(azure_account[0], container, account_key=azure_account[1],
                                      permission=ContainerSasPermissions(**permissions),
                                      expiry=datetime.datetime.now(datetime.UTC)
                                      + datetime.timedelta(hours=1))

    return sas


@pytest.fixture
def endpoint_only(azurite, monkeypatch):
    """Azurite's endpoint with no credential in the connection string: the URI or the
    environment has to bring one."""
    endpoint = azurite[azurite.index("BlobEndpoint="):]
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", endpoint)
    return endpoint


def test_azure_sas_token_in_the_uri(container, container_sas, endpoint_only, tmp_path,
                                   retries):
    """KServe's way: the SAS is the URI's query. It never shows in errors or in the marker."""
    sas = container_sas(container, read=True, list=True)
    uri = azure_uri(container, "models/m1")
    with pytest.raises(StorageError, match=f"^{uri}: .*"):
        download(uri, tmp_path / "a")  # a private container: no anonymous access
    dest = download(f"{uri}?{sas}", tmp_path / "a")
    assert tree(dest) == EXPECTED
    assert (dest / MARKER).read_text().count(f"{uri}?REDACTED") == 1 and "sig=" not in \
        (dest / MARKER).read_text()
    read_only = container_sas(container, read=True)  # cannot list
    with pytest.raises(StorageError) as refused:
        download(f"{uri}?{read_only}", tmp_path / "b")
    assert str(refused.value).startswith(f"{uri}?REDACTED: ")
    assert read_only not in str(refused.value) and "sig=" not in str(refused.value)
    assert not retries and not (tmp_path / "b").exists()


def test_azure_sas_token_from_the_environment_or_connection_string(
        container, container_sas, endpoint_only, tmp_path, monkeypatch):
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", "?" + container_sas(container, read=True,
                                                                      list=True))
    assert tree(download(azure_uri(container, "models/m1"), tmp_path / "a")) == EXPECTED
    monkeypatch.delenv("AZURE_STORAGE_SAS_TOKEN")
    sas = container_sas(container, read=True, list=True)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       f"{endpoint_only}SharedAccessSignature={sas}")
    assert tree(download(azure_uri(container, "models/m1"), tmp_path / "b")) == EXPECTED


def test_azure_account_key_for_the_uris_account(container, endpoint_only, tmp_path,
                                                monkeypatch, azure_account):
    monkeypatch.setenv("AZURE_STORAGE_ACCESS_KEY", azure_account[1])
    assert tree(download(azure_uri(container, "models/m1"), tmp_path / "a")) == EXPECTED


@pytest.fixture
def entra(authority, tls, monkeypatch):
    """azure-identity pointed at the tests' authority (trusted through the CA bundle)."""
    url, handler = authority
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls[2]))
    handler.token_requests.clear()
    return handler


@pytest.fixture
def oauth_container(azurite_oauth, azure_account, entra, monkeypatch):
    """A container on the HTTPS azurite that takes bearer tokens, found through an endpoint-only
    connection string."""
    from azure.storage.blob import BlobServiceClient

    key_string = (f"DefaultEndpointsProtocol=https;AccountName={azure_account[0]};"
                  f"AccountKey={azure_account[1]};BlobEndpoint={azurite_oauth};")
    name = unique("c")
    client = BlobServiceClient.from_connection_string(key_string).create_container(name)
    for key, data in FILES.items():
        client.upload_blob(key, data)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", f"BlobEndpoint={azurite_oauth};")
    return name


def test_azure_service_principal(entra, oauth_container, tmp_path, monkeypatch, retries):
    """AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET: azure-identity asks the
    authority for a token with the secret, and azurite takes that token as the request's."""
    monkeypatch.setenv("AZURE_TENANT_ID", entra.TENANT)
    monkeypatch.setenv("AZURE_CLIENT_ID", entra.CLIENT)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", entra.SECRET)
    uri = azure_uri(oauth_container, "models/m1")
    assert tree(download(uri, tmp_path / "a")) == EXPECTED
    assert [(r["path"], r["client_id"], r["client_secret"], r["scope"])
            for r in entra.token_requests] == [
        (f"/{entra.TENANT}/oauth2/v2.0/token", entra.CLIENT, entra.SECRET,
         "https://storage.azure.com/.default")]
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "wrong-secret")
    with pytest.raises(StorageError, match=f"^{uri}: .*AADSTS7000215") as refused:
        download(uri, tmp_path / "b")
    assert "wrong-secret" not in str(refused.value)
    assert not retries and not (tmp_path / "b").exists()


def test_azure_kserve_legacy_names_and_workload_identity(entra, oauth_container, tmp_path,
                                                         monkeypatch):
    """KServe's older AZ_* names; and AKS workload identity, whose token file is sent to the
    authority as the client assertion."""
    monkeypatch.setenv("AZ_TENANT_ID", entra.TENANT)
    monkeypatch.setenv("AZ_CLIENT_ID", entra.CLIENT)
    monkeypatch.setenv("AZ_CLIENT_SECRET", entra.SECRET)
    assert tree(download(azure_uri(oauth_container, "models/m1"), tmp_path / "a")) == EXPECTED
    monkeypatch.delenv("AZ_CLIENT_SECRET")
    (tmp_path / "token").write_text("federated-token-from-kubernetes")
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(tmp_path / "token"))
    assert tree(download(azure_uri(oauth_container, "models/m1/"), tmp_path / "b")) == EXPECTED
    assert entra.token_requests[-1]["client_assertion"] == "federated-token-from-kubernetes"
    assert len(entra.token_requests) == 2


def test_azure_client_id_alone_is_a_managed_identity(monkeypatch):
    """Without a secret or a token file, the client id names a managed identity, which only the
    platform's metadata endpoint serves: this checks the credential chosen, and asks no token."""
    from azure.identity import ManagedIdentityCredential, WorkloadIdentityCredential

    from modelstorage.azure import credential, identity_credential

    monkeypatch.setenv("AZURE_CLIENT_ID", "my-identity")
    assert isinstance(identity_credential(), ManagedIdentityCredential)
    monkeypatch.setenv("AZURE_TENANT_ID", "my-tenant")
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/token")
    assert isinstance(identity_credential(), WorkloadIdentityCredential)
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", "sv=2024&sig=x")  # a SAS comes first
    assert type(credential("acct")).__name__ == "AzureSasCredential"
