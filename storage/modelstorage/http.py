"""One file over http(s), redirects followed (each first checked, when the caller gives a check).
Request headers (for auth) come from STORAGE_HTTP_HEADERS, a JSON object, and from KServe's
`<host>-headers` variable for the URI's host; requests drops Authorization when a redirect leads
to another host."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
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
# A whole download, retries included: a server that sends a byte a minute never stalls, and
# would otherwise hold a load (which the repository API can ask for) for ever.
DEADLINE_ENV = "STORAGE_HTTP_DEADLINE_SECONDS"
DEFAULT_DEADLINE = 3600.0
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
    deadline = time.monotonic() + _deadline_seconds()
    with_retries(lambda: _get(uri, headers, hooks, stage, progress, deadline), progress.uri)


def _cut(reply: requests.Response) -> None:
    """Past the deadline: shut the connection down under the read that waits on it (closing
    the response alone would not wake a read blocked in another thread)."""
    sock = getattr(getattr(reply.raw, "connection", None), "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    reply.close()


def _deadline_seconds() -> float:
    value = os.environ.get(DEADLINE_ENV, "").strip()
    try:
        seconds = float(value) if value else DEFAULT_DEADLINE
    except ValueError:
        seconds = -1
    if not seconds > 0:  # also NaN
        raise StorageError(f"{DEADLINE_ENV} must be a number of seconds such as 3600, "
                           f"not {value!r}")
    return seconds


def _redirect_check(allow: Callable[[str], bool], uri: str):
    """A response hook: requests calls it on each response before following its redirect."""

    def check(reply: requests.Response, **_) -> None:
        if reply.is_redirect:
            target = urljoin(reply.url, reply.headers["location"])
            if not allow(target):
                raise Refused(f"it redirects to {scrub(target, target)}, which is not allowed")

    return check


def _get(uri: str, headers: dict[str, str], hooks: dict, stage: Path, progress,
         deadline: float) -> None:
    watchdog = None
    try:
        with requests.get(uri, headers=headers, hooks=hooks, stream=True,
                          timeout=TIMEOUT) as reply:
            if reply.status_code == 429 or reply.status_code >= 500:
                raise TransientError(f"HTTP {reply.status_code} {reply.reason}")
            if reply.status_code >= 400:
                raise StorageError(f"HTTP {reply.status_code} {reply.reason}")
            name = file_name(reply.url, reply.headers.get("content-disposition"))
            # With a Content-Encoding, Content-Length counts the encoded bytes, not ours, and
            # requests decodes them as they come: bounded like an archive. A plain body is
            # bounded by the same size, whatever its Content-Length says (or if it has none).
            encoding = reply.headers.get("content-encoding", "identity")
            encoded = encoding != "identity"
            limits = Limits.from_env()
            expected = None if encoded else reply.headers.get("content-length")
            if expected and expected.isdigit():
                limits.check_size(name, int(expected))
            progress.expect(1, int(expected or 0))
            written = 0
            watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), _cut, (reply,))
            watchdog.daemon = True
            watchdog.start()
            with open(stage / name, "wb") as out:
                for chunk in reply.iter_content(ENCODED_CHUNK if encoded else CHUNK):
                    written += len(chunk)
                    if encoded:  # before writing it: raw.tell() counts the bytes received
                        limits.check(f"the {encoding}-encoded body of {name}", written,
                                     reply.raw.tell())
                    else:
                        limits.check_size(name, written)
                    out.write(chunk)
                    progress.advance(len(chunk))
    except StorageError:
        raise
    except PERMANENT as exc:
        raise StorageError(scrub(str(exc), uri)) from None
    except Exception as exc:  # requests' text has the URL: a presigned one's signature
        if time.monotonic() >= deadline:
            raise StorageError(f"the download took longer than {_deadline_seconds():g}s, the "
                               f"limit set by {DEADLINE_ENV}") from None
        if isinstance(exc, requests.RequestException):
            raise TransientError(scrub(f"connection failed: {exc}", uri)) from None
        raise
    finally:
        if watchdog is not None:
            watchdog.cancel()
    if time.monotonic() >= deadline:  # closed at the very end: the body may be cut short
        raise StorageError(f"the download took longer than {_deadline_seconds():g}s, the limit "
                           f"set by {DEADLINE_ENV}")
    if expected is not None and written != int(expected):
        raise TransientError(f"got {written} of {expected} bytes")
    progress.file_done(name, written, counted=True)
