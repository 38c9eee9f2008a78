"""One file over http(s), redirects followed (each first checked, when the caller gives a check).
Request headers (for auth) come from STORAGE_HTTP_HEADERS, a JSON object, and from KServe's
`<host>-headers` variable for the URI's host; requests drops Authorization when a redirect leads
to another host."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urljoin, urlsplit

import requests

from .errors import Refused, StorageError, TransientError, scrub
from .limits import Limits
from .retry import with_retries

FOLLOWS_REDIRECTS = True  # so `fetch` takes `allow_redirect`
CHUNK = 1 << 20
# urllib3 reads this many raw bytes at a time for a decoded body: small, so that the bytes
# received so far, which the expansion ratio is measured against, grow in small steps.
ENCODED_CHUNK = 64 << 10
TIMEOUT = (10, 60)  # connect, and between bytes: a stalled server is retried, not waited on
# Failures that another attempt would only repeat: a bad URL, a certificate, a redirect loop.
PERMANENT = (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
             requests.exceptions.InvalidSchema, requests.exceptions.InvalidHeader,
             requests.exceptions.SSLError, requests.exceptions.TooManyRedirects)


def headers_for(uri: str) -> dict[str, str]:
    headers = {}
    for name in ("STORAGE_HTTP_HEADERS", f"{urlsplit(uri).hostname}-headers"):
        raw = os.environ.get(name)
        if not raw:
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise StorageError(f'{name} must be a JSON object of strings, '
                               'e.g. {"Authorization": "Bearer ..."}')
        headers.update(value)
    return headers


def file_name(url: str, disposition: str | None) -> str:
    """The server's Content-Disposition name, else the last part of the (redirected) URL."""
    match = re.search(r'filename="?([^";]+)"?', disposition or "")
    name = PurePosixPath(match.group(1) if match else unquote(urlsplit(url).path)).name
    return name if name not in ("", ".", "..") else "model"


def fetch(uri: str, stage: Path, progress,
          allow_redirect: Callable[[str], bool] | None = None) -> None:
    headers = headers_for(uri)
    hooks = {"response": _redirect_check(allow_redirect, uri)} if allow_redirect else {}
    with_retries(lambda: _get(uri, headers, hooks, stage, progress), progress.uri)


def _redirect_check(allow: Callable[[str], bool], uri: str):
    """A response hook: requests calls it on each response before following its redirect."""

    def check(reply: requests.Response, **_) -> None:
        if reply.is_redirect:
            target = urljoin(reply.url, reply.headers["location"])
            if not allow(target):
                raise Refused(f"it redirects to {scrub(target, target)}, which is not allowed")

    return check


def _get(uri: str, headers: dict[str, str], hooks: dict, stage: Path, progress) -> None:
    try:
        with requests.get(uri, headers=headers, hooks=hooks, stream=True,
                          timeout=TIMEOUT) as reply:
            if reply.status_code == 429 or reply.status_code >= 500:
                raise TransientError(f"HTTP {reply.status_code} {reply.reason}")
            if reply.status_code >= 400:
                raise StorageError(f"HTTP {reply.status_code} {reply.reason}")
            name = file_name(reply.url, reply.headers.get("content-disposition"))
            # With a Content-Encoding, Content-Length counts the encoded bytes, not ours, and
            # requests decodes them as they come: bounded like an archive.
            encoding = reply.headers.get("content-encoding", "identity")
            limits = Limits.from_env() if encoding != "identity" else None
            expected = None if limits else reply.headers.get("content-length")
            progress.expect(1, int(expected or 0))
            written = 0
            with open(stage / name, "wb") as out:
                for chunk in reply.iter_content(ENCODED_CHUNK if limits else CHUNK):
                    written += len(chunk)
                    if limits:  # before writing it: raw.tell() counts the bytes received
                        limits.check(f"the {encoding}-encoded body of {name}", written,
                                     reply.raw.tell())
                    out.write(chunk)
                    progress.advance(len(chunk))
    except PERMANENT as exc:
        raise StorageError(scrub(str(exc), uri)) from None
    except requests.RequestException as exc:  # its text has the URL: a presigned one's signature
        raise TransientError(scrub(f"connection failed: {exc}", uri)) from None
    if expected is not None and written != int(expected):
        raise TransientError(f"got {written} of {expected} bytes")
    progress.file_done(name, written, counted=True)
