"""gs://bucket/prefix with google-cloud-storage: GOOGLE_APPLICATION_CREDENTIALS, anonymous
access to public buckets when no credentials are found, STORAGE_EMULATOR_HOST for emulators.
The client checks each download's CRC32C or MD5."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from .errors import StorageError, TransientError
from .retry import with_retries

PARALLEL_FILES = 16


def client():
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    try:
        return storage.Client()
    except (DefaultCredentialsError, OSError):
        return storage.Client.create_anonymous_client()


def _error(exc: Exception) -> StorageError:
    from google.api_core import exceptions as api

    if isinstance(exc, (api.NotFound, api.Forbidden, api.Unauthorized, api.BadRequest)):
        return StorageError(getattr(exc, "message", None) or str(exc))
    if isinstance(exc, (api.GoogleAPIError, ConnectionError, OSError)):
        return TransientError(str(exc))
    raise exc


def fetch(uri: str, stage: Path, progress) -> None:
    from .download import safe_path

    bucket_name, _, key = uri[len("gs://"):].partition("/")
    if not bucket_name:
        raise StorageError("no bucket in the URI")
    gcs = client()
    bucket = gcs.bucket(bucket_name)
    try:
        single = bucket.get_blob(key) if key and not key.endswith("/") else None
        if single is not None:
            blobs = [(single, PurePosixPath(key).name)]
        else:
            prefix = key if not key or key.endswith("/") else key + "/"
            blobs = [(b, b.name[len(prefix):]) for b in gcs.list_blobs(bucket, prefix=prefix)
                     if not b.name.endswith("/")]
            if not blobs:
                raise StorageError(f"no objects under gs://{bucket_name}/{prefix}")
    except StorageError:
        raise
    except Exception as exc:
        raise _error(exc) from None

    def one(item) -> None:
        blob, relative = item
        target = safe_path(stage, relative)

        def attempt() -> None:
            try:
                blob.download_to_filename(str(target))
            except Exception as exc:
                raise _error(exc) from None
            if blob.size is not None and target.stat().st_size != blob.size:
                raise TransientError(f"{blob.name}: got {target.stat().st_size} of {blob.size}")

        with_retries(attempt, f"gs://{bucket_name}/{blob.name}")
        progress.file_done(relative, target.stat().st_size)

    with ThreadPoolExecutor(min(PARALLEL_FILES, len(blobs))) as pool:
        for _ in pool.map(one, blobs):
            pass
