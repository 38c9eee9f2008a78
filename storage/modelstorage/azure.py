"""Azure Blob: https://<account>.blob.core.windows.net/<container>/<prefix>, as KServe writes it.
Credentials: AZURE_STORAGE_CONNECTION_STRING (which also names the endpoint, so it can point at
azurite or another cloud), else AZURE_STORAGE_ACCESS_KEY for the URI's account, else anonymous
(public containers)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from azure.core import exceptions as az
from azure.storage.blob import BlobProperties, BlobServiceClient, ContainerClient

from .atomic import safe_path
from .errors import StorageError, TransientError
from .retry import parallel, with_retries

PARALLEL_FILES = 16
BLOB_CONCURRENCY = 4  # ranged requests per large blob


def service(account: str) -> BlobServiceClient:
    if connection := os.environ.get("AZURE_STORAGE_CONNECTION_STRING"):
        return BlobServiceClient.from_connection_string(connection)
    url = f"https://{account}.blob.core.windows.net"
    if key := os.environ.get("AZURE_STORAGE_ACCESS_KEY"):
        return BlobServiceClient(url, credential={"account_name": account, "account_key": key})
    return BlobServiceClient(url)


def fetch(uri: str, stage: Path, progress) -> None:
    parts = urlsplit(uri)
    account = parts.hostname.split(".", 1)[0]
    container_name, _, key = unquote(parts.path).lstrip("/").partition("/")
    if not container_name:
        raise StorageError("no container in the URI")
    container = _guard(lambda: service(account).get_container_client(container_name))
    blobs = with_retries(lambda: _guard(lambda: _list(container, key)), uri)
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
