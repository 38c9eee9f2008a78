"""gs://bucket/prefix with google-cloud-storage. Credentials: GOOGLE_APPLICATION_CREDENTIALS or
the default chain, anonymous (public buckets) when none is found; STORAGE_EMULATOR_HOST for an
emulator. The client checks each download's CRC32C (or MD5) itself."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import requests
from google.api_core import exceptions as api
from google.auth.exceptions import DefaultCredentialsError, TransportError
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption

from .atomic import safe_path
from .errors import StorageError, TransientError
from .retry import parallel, with_retries

PARALLEL_FILES = 16
TRANSIENT = (api.TooManyRequests, api.ServerError, DataCorruption, TransportError,
             requests.ConnectionError, requests.Timeout, ConnectionError)


def client() -> storage.Client:
    try:
        return storage.Client()
    except DefaultCredentialsError:
        if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
            raise  # named but unusable: say so rather than fall back to anonymous
        return storage.Client.create_anonymous_client()


def fetch(uri: str, stage: Path, progress) -> None:
    bucket_name, _, key = uri[len("gs://"):].partition("/")
    if not bucket_name:
        raise StorageError("no bucket in the URI")
    gcs = _guard(client)
    blobs = with_retries(lambda: _guard(lambda: _list(gcs, bucket_name, key)), uri)
    progress.expect(len(blobs), sum(blob.size or 0 for blob, _ in blobs))

    def one(item) -> None:
        blob, relative = item
        target = safe_path(stage, relative)
        with_retries(lambda: _guard(lambda: blob.download_to_filename(str(target))),
                     f"gs://{bucket_name}/{blob.name}")
        if blob.size is not None and target.stat().st_size != blob.size:
            raise StorageError(f"{blob.name}: got {target.stat().st_size} of {blob.size} bytes")
        progress.file_done(relative, target.stat().st_size)

    parallel(one, blobs, PARALLEL_FILES)


def _list(gcs: storage.Client, bucket_name: str, key: str) -> list[tuple[storage.Blob, str]]:
    """Everything under `key/` (a folder: never `key-other/`); else the object `key` itself."""
    prefix = key if not key or key.endswith("/") else key + "/"
    found = [(blob, blob.name[len(prefix):]) for blob in gcs.list_blobs(bucket_name, prefix=prefix)
             if not blob.name.endswith("/")]
    if found:
        return found
    single = gcs.bucket(bucket_name).get_blob(key) if prefix != key else None
    if single is None:
        what = "no object of that name, and " if prefix != key else ""
        raise StorageError(f"{what}no objects under gs://{bucket_name}/{prefix}")
    return [(single, PurePosixPath(key).name)]


def _guard(call):
    """`call()`, with Google's exceptions as ours: transient ones retried, the rest final."""
    try:
        return call()
    except TRANSIENT as exc:
        raise TransientError(getattr(exc, "message", None) or str(exc)) from None
    except (api.GoogleAPICallError, DefaultCredentialsError) as exc:
        raise StorageError(getattr(exc, "message", None) or str(exc)) from None
