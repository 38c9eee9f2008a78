"""s3://bucket/prefix with boto3 and one s3transfer manager for all the files (as `aws s3 cp`
does): small objects and the parts of large ones share one pool of concurrent requests.

Credentials: the usual AWS chain. Endpoint: AWS_ENDPOINT_URL, or KServe's S3_ENDPOINT with
S3_USE_HTTPS; S3_VERIFY_SSL=0 skips certificate checks; awsAnonymousCredential=true sends
unsigned requests (public buckets); S3_USER_VIRTUAL_BUCKET=true keeps virtual-host addressing
on a custom endpoint (path style otherwise, which MinIO, Ceph and moto expect)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NoReturn

import boto3
from boto3.s3.transfer import TransferConfig
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import (BotoCoreError, ClientError, HTTPClientError,
                                 IncompleteReadError, NoCredentialsError)
from botocore.exceptions import ConnectionError as BotoConnectionError
from s3transfer.exceptions import RetriesExceededError
from s3transfer.manager import TransferManager
from s3transfer.subscribers import BaseSubscriber

from .atomic import safe_path
from .errors import StorageError, TransientError
from .retry import with_retries

CONCURRENCY = 16  # requests in flight
PART = 16 << 20  # objects above this come in parts of this size, concurrently
TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                   "RequestTimeout", "InternalError", "ServiceUnavailable"}


@dataclass(frozen=True)
class Object:
    key: str
    relative: str  # its path in the model directory
    size: int
    etag: str


def fetch(uri: str, stage: Path, progress) -> None:
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise StorageError("no bucket in the URI")
    s3 = client()
    objects = with_retries(lambda: _guard(lambda: _list(s3, bucket, key)), uri)
    progress.expect(len(objects), sum(o.size for o in objects))
    done: set[Object] = set()
    # Each attempt fetches what has not arrived yet; s3transfer and botocore retry single
    # requests underneath, this retries whole files (a checksum mismatch, a reset mid-body).
    with_retries(lambda: _transfer(s3, bucket, objects, done, stage, progress), uri)


def client():
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT")
    if endpoint and "://" not in endpoint:  # KServe's S3_ENDPOINT is a bare host[:port]
        endpoint = ("https://" if _flag("S3_USE_HTTPS", True) else "http://") + endpoint
    virtual = _flag("S3_USER_VIRTUAL_BUCKET", False)
    config = Config(
        retries={"mode": "standard", "max_attempts": 5},
        max_pool_connections=CONCURRENCY,
        signature_version=UNSIGNED if _flag("awsAnonymousCredential", False) else None,
        s3={"addressing_style": "path" if endpoint and not virtual else "auto"})
    return boto3.client("s3", endpoint_url=endpoint, config=config,
                        verify=None if _flag("S3_VERIFY_SSL", True) else False,
                        region_name=os.environ.get("AWS_DEFAULT_REGION") or None)


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes", "on")


def _list(s3, bucket: str, key: str) -> list[Object]:
    """Everything under `key/` (a folder: never `key-other/`); else the object `key` itself."""
    prefix = key if not key or key.endswith("/") else key + "/"
    found = [Object(item["Key"], item["Key"][len(prefix):], item["Size"], item["ETag"])
             for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
             for item in page.get("Contents", ()) if not item["Key"].endswith("/")]
    if found or prefix == key:
        return found or _nothing(bucket, key)
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return _nothing(bucket, key)
        raise
    return [Object(key, PurePosixPath(key).name, head["ContentLength"], head["ETag"])]


def _nothing(bucket: str, key: str) -> NoReturn:
    what = "no object of that name, and " if key and not key.endswith("/") else ""
    raise StorageError(f"{what}no objects under s3://{bucket}/{key.rstrip('/')}/")


class _Report(BaseSubscriber):
    """Gives s3transfer the size and ETag we listed (so no HeadObject per file; its GETs then
    carry If-Match, so that an object replaced meanwhile fails rather than mixes) and
    reports progress."""

    def __init__(self, item: Object, progress):
        self.item, self.progress = item, progress

    def on_queued(self, future, **kwargs):
        future.meta.provide_transfer_size(self.item.size)
        future.meta.provide_object_etag(self.item.etag)

    def on_progress(self, future, bytes_transferred, **kwargs):
        self.progress.advance(bytes_transferred)


def _transfer(s3, bucket: str, objects: list[Object], done: set[Object], stage: Path,
              progress) -> None:
    config = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART,
                            max_concurrency=CONCURRENCY)
    failed: list[TransientError] = []
    # Leaving the block on an exception cancels the transfers still queued.
    with TransferManager(s3, config) as manager:
        futures = [(item, manager.download(bucket, item.key, str(safe_path(stage, item.relative)),
                                           subscribers=[_Report(item, progress)]))
                   for item in objects if item not in done]
        for item, future in futures:
            try:
                _guard(future.result)
                _check(s3, bucket, item, stage / item.relative)
            except TransientError as exc:
                failed.append(TransientError(f"{item.key}: {exc}"))
                continue
            except StorageError as exc:
                raise StorageError(f"s3://{bucket}/{item.key}: {exc}") from None
            done.add(item)
            progress.file_done(item.relative, item.size, counted=True)
    if failed:
        raise TransientError(f"{len(failed)} file(s) failed, first {failed[0]}")


def _check(s3, bucket: str, item: Object, path: Path) -> None:
    """The size, and the MD5 where the ETag is one (single-part uploads without KMS)."""
    if path.stat().st_size != item.size:
        raise TransientError(f"got {path.stat().st_size} of {item.size} bytes")
    etag = item.etag.strip('"')
    if "-" in etag or len(etag) != 32:
        return
    with open(path, "rb") as data:
        digest = hashlib.file_digest(data, "md5").hexdigest()
    if digest != etag:
        head = _guard(lambda: s3.head_object(Bucket=bucket, Key=item.key))
        if not (head.get("ServerSideEncryption", "").startswith("aws:kms")
                or head.get("SSECustomerAlgorithm")):  # then the ETag is no MD5
            raise TransientError("MD5 does not match the ETag")


def _guard(call):
    """`call()`, with boto's exceptions as ours: transient ones retried, the rest final."""
    try:
        return call()
    except RetriesExceededError as exc:  # s3transfer gave up on a body cut short, several times
        raise TransientError(str(exc.last_exception)) from None
    except (ClientError, BotoCoreError) as exc:
        raise _error(exc) from None


def _error(exc: Exception) -> StorageError:
    if isinstance(exc, NoCredentialsError):
        return StorageError("no AWS credentials found (set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY, or awsAnonymousCredential=true)")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = str(error.get("Code") or status)
        message = f"{code}: {error.get('Message') or exc}"
        if code in TRANSIENT_CODES or status >= 500 or status == 429:
            return TransientError(message)
        return StorageError(message)
    if isinstance(exc, (BotoConnectionError, HTTPClientError, IncompleteReadError)):
        return TransientError(str(exc))
    return StorageError(str(exc))  # bad parameters, no region, ...: trying again won't help
