"""Azure Blob: https://<account>.blob.core.windows.net/<container>/<prefix>[?<SAS>], as KServe writes
it. Where: the endpoint of AZURE_STORAGE_CONNECTION_STRING (so it can point at azurite or another
cloud), else the URI's account. Credentials, the first found:
- the connection string's own account key or SharedAccessSignature;
- a SAS token: the URI's query (KServe's way), else AZURE_STORAGE_SAS_TOKEN;
- a service principal or managed identity, as KServe reads it (AZURE_CLIENT_ID, or its older
  AZ_CLIENT_ID, and the same for _TENANT_ID and _CLIENT_SECRET), through azure-identity: with a
  secret and tenant, a client secret credential; with a tenant and AZURE_FEDERATED_TOKEN_FILE
  (AKS workload identity), a workload identity credential; else the managed identity of that
  client id. AZURE_AUTHORITY_HOST names another cloud's sign-in host;
- AZURE_STORAGE_ACCESS_KEY, the URI's account's key;
- none: anonymous (public containers)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from azure.core import exceptions as az
from azure.core.credentials import AzureSasCredential
from azure.storage.blob import BlobProperties, BlobServiceClient, ContainerClient

from .atomic import safe_path
from .errors import StorageError, TransientError, not_installed
from .retry import parallel, with_retries

PARALLEL_FILES = 16
BLOB_CONCURRENCY = 4  # ranged requests per large blob
STORAGE_SCOPE = "https://storage.azure.com/.default"


def service(account: str, sas: str = "") -> BlobServiceClient:
    url = f"https://{account}.blob.core.windows.net"
    if connection := os.environ.get("AZURE_STORAGE_CONNECTION_STRING"):
        client = BlobServiceClient.from_connection_string(connection)
        if client.credential is not None or urlsplit(client.url).query:  # a key, or a SAS
            return client
        url = client.url  # an endpoint alone
    return BlobServiceClient(url, credential=credential(account, sas))


def credential(account: str, sas: str = ""):
    if sas := sas or os.environ.get("AZURE_STORAGE_SAS_TOKEN", ""):
        return AzureSasCredential(sas.lstrip("?"))
    if _setting("CLIENT_ID"):
        token_credential = identity_credential()
        # A token now, once: wrong credentials fail at once, where the storage client would
        # retry them for a minute and a half (it keeps the token: one request to the authority).
        _guard(lambda: token_credential.get_token(STORAGE_SCOPE))
        return token_credential
    if key := os.environ.get("AZURE_STORAGE_ACCESS_KEY"):
        return {"account_name": account, "account_key": key}
    return None


def _setting(name: str) -> str | None:
    return os.environ.get(f"AZURE_{name}") or os.environ.get(f"AZ_{name}")


def identity_credential():
    """The service principal, workload identity or managed identity the environment names."""
    try:
        from azure import identity
    except ImportError as exc:
        raise not_installed(exc, "azure") from None
    client, tenant, secret = _setting("CLIENT_ID"), _setting("TENANT_ID"), _setting("CLIENT_SECRET")
    token_file = os.environ.get("AZURE_FEDERATED_TOKEN_FILE")
    if tenant and secret:
        return identity.ClientSecretCredential(tenant, client, secret, **_authority(identity))
    if tenant and token_file:
        return identity.WorkloadIdentityCredential(tenant_id=tenant, client_id=client,
                                                   token_file_path=token_file,
                                                   **_authority(identity))
    return identity.ManagedIdentityCredential(client_id=client)


def _authority(identity) -> dict:
    """An AZURE_AUTHORITY_HOST that is none of Microsoft's clouds (Azure Stack, a private cloud)
    is used as given: MSAL would first ask login.microsoftonline.com to vouch for it, which
    such a cloud cannot reach and which knows nothing of it."""
    host = os.environ.get("AZURE_AUTHORITY_HOST", "")
    name = urlsplit(host if "://" in host else f"https://{host}").hostname
    clouds = {getattr(identity.AzureAuthorityHosts, cloud)
              for cloud in dir(identity.AzureAuthorityHosts) if cloud.isupper()}
    return {"disable_instance_discovery": True} if name and name not in clouds else {}


def fetch(uri: str, stage: Path, progress) -> None:
    parts = urlsplit(uri)
    account = parts.hostname.split(".", 1)[0]
    container_name, _, key = unquote(parts.path).lstrip("/").partition("/")
    if not container_name:
        raise StorageError("no container in the URI")
    container = _guard(lambda: service(account, parts.query).get_container_client(container_name))
    blobs = with_retries(lambda: _guard(lambda: _list(container, key)), progress.uri)
    progress.expect(len(blobs), sum(blob.size for blob, _ in blobs))

    def one(item: tuple[BlobProperties, str]) -> None:
        blob, relative = item
        target = safe_path(stage, relative)
        with_retries(lambda: _guard(lambda: _download(container, blob, target)),
                     f"{container_name}/{blob.name}")
        progress.file_done(relative, blob.size)

    parallel(one, blobs, PARALLEL_FILES)


def _list(container: ContainerClient, key: str) -> list[tuple[BlobProperties, str]]:
    """Everything under `key/` (a folder: never `key-other/`); else the blob `key` itself."""
    prefix = key if not key or key.endswith("/") else key + "/"
    found = [(blob, blob.name[len(prefix):])
             for blob in container.list_blobs(name_starts_with=prefix or None)
             if not blob.name.endswith("/")]
    if found:
        return found
    where = f"{container.container_name}/{key}"
    if prefix != key:
        try:
            return [(container.get_blob_client(key).get_blob_properties(),
                     PurePosixPath(key).name)]
        except az.ResourceNotFoundError:
            raise StorageError(f"no blob of that name, and no blobs under {where}/") from None
    raise StorageError(f"no blobs under {where}")


def _download(container: ContainerClient, blob: BlobProperties, target: Path) -> None:
    with open(target, "wb") as out:
        container.download_blob(blob.name, max_concurrency=BLOB_CONCURRENCY).readinto(out)
    if target.stat().st_size != blob.size:
        raise TransientError(f"got {target.stat().st_size} of {blob.size} bytes")
    expected = blob.content_settings.content_md5  # set for blobs uploaded in one request
    if expected:
        with open(target, "rb") as data:
            if hashlib.file_digest(data, "md5").digest() != bytes(expected):
                raise TransientError("MD5 does not match the blob's Content-MD5")


def _guard(call):
    """`call()`, with Azure's exceptions as ours: transient ones retried, the rest final."""
    try:
        return call()
    except az.HttpResponseError as exc:
        status = exc.status_code or 0
        error = TransientError if status >= 500 or status == 429 else StorageError
        raise error(_message(exc)) from None
    except (az.ServiceRequestError, az.ServiceResponseError) as exc:  # connection-level
        raise TransientError(_message(exc)) from None
    except (az.AzureError, ValueError) as exc:  # ValueError: a malformed connection string
        raise StorageError(_message(exc)) from None


def _message(exc: Exception) -> str:
    """The first line: Azure's messages go on with request ids and XML."""
    return (getattr(exc, "message", None) or str(exc)).strip().splitlines()[0]
