"""s3://bucket/prefix with boto3. Endpoint and TLS from AWS_ENDPOINT_URL, or KServe's
S3_ENDPOINT / S3_USE_HTTPS / S3_VERIFY_SSL; unsigned access with awsAnonymousCredential=true."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from .errors import StorageError, TransientError
from .retry import with_retries

PERMANENT = {"NoSuchBucket", "NoSuchKey", "404", "AccessDenied", "403", "InvalidAccessKeyId",
             "SignatureDoesNotMatch", "InvalidBucketName", "AllAccessDisabled"}
PARALLEL_FILES = 16


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes", "on")


def client():
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT")
    if endpoint and "://" not in endpoint:
        endpoint = ("https://" if _flag("S3_USE_HTTPS", True) else "http://") + endpoint
    config = Config(retries={"mode": "standard", "max_attempts": 5},
                    max_pool_connections=PARALLEL_FILES * 2,
                    signature_version=UNSIGNED if _flag("awsAnonymousCredential", False) else None)
    verify = None if _flag("S3_VERIFY_SSL", True) else False
    return boto3.client("s3", endpoint_url=endpoint, config=config, verify=verify,
                        region_name=os.environ.get("AWS_DEFAULT_REGION") or None)


def _error(exc: Exception) -> StorageError:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return StorageError("no AWS credentials found (set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY, or awsAnonymousCredential=true)")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = f"{code}: {error.get('Message') or exc}"
        return StorageError(message) if code in PERMANENT else TransientError(message)
    if isinstance(exc, BotoCoreError):
        return TransientError(str(exc))
    raise exc


def _objects(s3, bucket: str, key: str) -> list[tuple[str, str, int, str]]:
    """(key, relative path, size, etag) of the object `key`, else of everything under `key/`."""
    from botocore.exceptions import ClientError

    prefix = key
    if key and not key.endswith("/"):
        try:
            head = s3.head_object(Bucket=bucket, Key=key)
            return [(key, PurePosixPath(key).name, head["ContentLength"], head["ETag"])]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise
        prefix = key + "/"  # a folder: never `key-other/`
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if not item["Key"].endswith("/"):
                found.append((item["Key"], item["Key"][len(prefix):], item["Size"], item["ETag"]))
    if not found:
        raise StorageError(f"no objects under s3://{bucket}/{prefix}")
    return found


def _check(path: Path, size: int, etag: str, key: str) -> None:
    if path.stat().st_size != size:
        raise TransientError(f"{key}: got {path.stat().st_size} of {size} bytes")
    etag = etag.strip('"')
    if "-" not in etag and len(etag) == 32:  # a single-part upload's ETag is its MD5
        digest = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as data:
            for chunk in iter(lambda: data.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != etag:
            raise TransientError(f"{key}: MD5 does not match the ETag")


def fetch(uri: str, stage: Path, progress) -> None:
    from boto3.s3.transfer import TransferConfig

    from .download import safe_path

    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise StorageError("no bucket in the URI")
    s3 = client()
    try:
        objects = _objects(s3, bucket, key)
    except StorageError:
        raise
    except Exception as exc:
        raise _error(exc) from None
    transfer = TransferConfig(multipart_threshold=16 << 20, multipart_chunksize=16 << 20,
                              max_concurrency=8)

    def one(item: tuple[str, str, int, str]) -> None:
        object_key, relative, size, etag = item
        target = safe_path(stage, relative)

        def attempt() -> None:
            try:
                s3.download_file(bucket, object_key, str(target), Config=transfer)
            except Exception as exc:
                raise _error(exc) from None
            _check(target, size, etag, object_key)

        with_retries(attempt, f"s3://{bucket}/{object_key}")
        progress.file_done(relative, size)

    with ThreadPoolExecutor(min(PARALLEL_FILES, len(objects))) as pool:
        for _ in pool.map(one, objects):
            pass
