"""Azure Blob: https://<account>.blob.core.windows.net/<container>/<prefix>, as KServe writes it.
Credentials: AZURE_STORAGE_CONNECTION_STRING (which may also name another endpoint, such as
azurite), else AZURE_STORAGE_ACCESS_KEY for the URI's account, else anonymous (public)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from .errors import StorageError, TransientError
from .retry import with_retries

SUFFIX = ".blob.core.windows.net"
PARALLEL_FILES = 8


def is_azure_url(uri: str) -> bool:
    return (urlsplit(uri).hostname or "").endswith(SUFFIX)


def service(account: str):
    from azure.storage.blob import BlobServiceClient

    connection = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if connection:
        return BlobServiceClient.from_connection_string(connection)
    key = os.environ.get("AZURE_STORAGE_ACCESS_KEY")
    url = f"https://{account}{SUFFIX}"
    if key:
        return BlobServiceClient(url, credential={"account_name": account, "account_key": key})
    return BlobServiceClient(url)


def _error(exc: Exception) -> StorageError:
    from azure.core import exceptions as az

    if isinstance(exc, (az.ResourceNotFoundError, az.ClientAuthenticationError)):
        return StorageError(exc.message or str(exc))
    if isinstance(exc, az.HttpResponseError):
        status = exc.status_code or 0
        message = exc.message or str(exc)
        return TransientError(message) if status >= 500 or status == 429 else StorageError(message)
    if isinstance(exc, az.AzureError):
        return TransientError(str(exc))
    raise exc


def fetch(uri: str, stage: Path, progress) -> None:
    from .download import safe_path

    parts = urlsplit(uri)
    account = parts.hostname[: -len(SUFFIX)]
    container_name, _, key = unquote(parts.path).lstrip("/").partition("/")
    if not container_name:
        raise StorageError("no container in the URI")
    container = service(account).get_container_client(container_name)
    try:
        single = container.get_blob_client(key) if key and not key.endswith("/") else None
        if single is not None and single.exists():
            blobs = [(key, PurePosixPath(key).name, single.get_blob_properties().size)]
        else:
            prefix = key if not key or key.endswith("/") else key + "/"
            blobs = [(b.name, b.name[len(prefix):], b.size)
                     for b in container.list_blobs(name_starts_with=prefix)
                     if not b.name.endswith("/")]
            if not blobs:
                raise StorageError(f"no blobs under {container_name}/{prefix}")
    except StorageError:
        raise
    except Exception as exc:
        raise _error(exc) from None

    def one(item) -> None:
        name, relative, size = item
        target = safe_path(stage, relative)

        def attempt() -> None:
            try:
                with open(target, "wb") as out:
                    container.download_blob(name, max_concurrency=4).readinto(out)
            except Exception as exc:
                raise _error(exc) from None
            if target.stat().st_size != size:
                raise TransientError(f"{name}: got {target.stat().st_size} of {size} bytes")

        with_retries(attempt, f"{container_name}/{name}")
        progress.file_done(relative, size)

    with ThreadPoolExecutor(min(PARALLEL_FILES, len(blobs))) as pool:
        for _ in pool.map(one, blobs):
            pass
