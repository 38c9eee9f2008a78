"""A single file over http(s), redirects followed; headers from STORAGE_HTTP_HEADERS (JSON)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .errors import StorageError, TransientError
from .retry import with_retries

CHUNK = 1 << 20


def headers_from_env() -> dict[str, str]:
    raw = os.environ.get("STORAGE_HTTP_HEADERS", "")
    if not raw:
        return {}
    try:
        headers = json.loads(raw)
    except ValueError:
        headers = None
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise StorageError('STORAGE_HTTP_HEADERS must be a JSON object of strings, '
                           'e.g. {"Authorization": "Bearer ..."}')
    return headers


def file_name(uri: str, disposition: str | None) -> str:
    if disposition and (match := re.search(r'filename="?([^";]+)"?', disposition)):
        return Path(match.group(1)).name
    return Path(unquote(urlsplit(uri).path)).name or "model"


def fetch(uri: str, stage: Path, progress) -> None:
    import requests

    headers = headers_from_env()

    def attempt() -> None:
        try:
            # requests drops Authorization on a redirect to another host.
            with requests.get(uri, headers=headers, stream=True, timeout=(10, 60)) as reply:
                if reply.status_code in (429,) or reply.status_code >= 500:
                    raise TransientError(f"HTTP {reply.status_code} {reply.reason}")
                if reply.status_code >= 400:
                    raise StorageError(f"HTTP {reply.status_code} {reply.reason}")
                name = file_name(reply.url, reply.headers.get("content-disposition"))
                # With a content-encoding, content-length counts the encoded bytes.
                encoded = reply.headers.get("content-encoding", "identity") != "identity"
                expected = None if encoded else reply.headers.get("content-length")
                target = stage / name
                written = 0
                with open(target, "wb") as out:
                    for chunk in reply.iter_content(CHUNK):
                        out.write(chunk)
                        written += len(chunk)
        except requests.RequestException as exc:
            raise TransientError(f"connection failed: {exc}") from None
        if expected is not None and written != int(expected):
            raise TransientError(f"got {written} of {expected} bytes")
        progress.file_done(name, written)

    with_retries(attempt, uri)
