"""Whether a URI lies under one of a list of prefixes, read the way the backends read URIs.

Both the prefixes and the URI are brought to one form before they are compared, so that
spelling cannot move a URI out from under a prefix or into one:

- local paths, `file://` and `pvc://` become the real path their backend opens (symlinks and
  `..` resolved, as the filesystem resolves them);
- scheme and host are compared without case, a host's trailing dot and a default port written
  out (`:80`, `:443`) are dropped; a URI with user information (`http://ok@evil/`) is refused,
  as is one with a space, a control character or a host that is not ASCII;
- `.` and `..` segments are refused, also percent-encoded (once or more), between
  backslashes or with `;parameters`, since some servers and SDKs resolve them and some do not;
- http(s) paths are compared percent-decoded, as the server reads them; the object keys of the
  other schemes are compared as written, as their SDKs send them;
- a prefix matches whole path segments: `s3://models` and `s3://models/` both allow
  `s3://models/x`, never `s3://models-old/x`. A URI's query and fragment play no part.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from .download import scheme_of
from .local import local_path

LOCAL = ("", "file", "pvc")
DEFAULT_PORTS = {"http": 80, "https": 443}
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")
_DOTS = (".", "..")


@dataclass(frozen=True, slots=True)
class Place:
    """A URI in the form prefixes are compared in."""

    scheme: str
    authority: str
    segments: tuple[str, ...]

    def is_under(self, prefix: Place) -> bool:
        return (self.scheme == prefix.scheme and self.authority == prefix.authority
                and self.segments[:len(prefix.segments)] == prefix.segments)


def place(uri: str) -> Place:
    """Where `uri` points; ValueError, saying why, for a URI that cannot be placed safely."""
    if _UNSAFE.search(uri):
        raise ValueError("it holds a space or a control character")
    scheme = scheme_of(uri)
    if scheme in LOCAL:
        return Place("file", "", _segments(os.path.realpath(local_path(uri))))
    parts = urlsplit(uri)
    if "@" in parts.netloc:
        raise ValueError("user information ('user@host') is not accepted; give credentials "
                         "in the environment")
    if not parts.netloc.isascii():
        raise ValueError("its host is not ASCII")
    decoded = _decoded(parts.path)  # a server, or an SDK's HTTP client, may decode and resolve
    if any(s.split(";")[0] in _DOTS for s in re.split(r"[/\\]", decoded)):
        raise ValueError("'.' and '..' are not accepted in its path")
    if scheme in DEFAULT_PORTS:
        authority, segments = _host_and_port(parts, DEFAULT_PORTS[scheme]), _segments(decoded)
    else:  # an object key, sent as written
        authority, segments = parts.netloc.lower(), _segments(parts.path)
    return Place(scheme, authority, segments)


class UriPrefixes:
    """The prefixes URIs are checked against; ValueError for one that cannot be read."""

    def __init__(self, prefixes: Iterable[str]):
        self.written = [p.strip() for p in prefixes if p.strip()]
        self.places = []
        for prefix in self.written:
            if scheme_of(prefix) not in LOCAL and (urlsplit(prefix).query
                                                   or urlsplit(prefix).fragment):
                raise ValueError(f"prefix {prefix!r}: a query or fragment is not a prefix")
            try:
                self.places.append(place(prefix))
            except ValueError as exc:
                raise ValueError(f"prefix {prefix!r}: {exc}") from None

    def __bool__(self) -> bool:
        return bool(self.places)

    def __str__(self) -> str:
        return ", ".join(self.written)

    def allows(self, uri: str) -> bool:
        """Whether `uri` lies under one of the prefixes; ValueError for a URI that cannot be
        placed (see `place`)."""
        where = place(uri)
        return any(where.is_under(prefix) for prefix in self.places)


def _host_and_port(parts, default_port: int) -> str:
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError("it has no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("its port is not a number") from None
    host = f"[{host}]" if ":" in host else host
    return host if port in (None, default_port) else f"{host}:{port}"


def _decoded(path: str) -> str:
    """`path` percent-decoded until nothing changes, so that an encoded `..` shows however
    often it was encoded."""
    for _ in range(8):
        decoded = unquote(path)
        if decoded == path:
            return path
        path = decoded
    raise ValueError("it is percent-encoded too many times over")


def _segments(path: str) -> tuple[str, ...]:
    """The segments of an absolute path, empty ones kept (`//` may matter to a server or an
    object store) but a trailing slash dropped: `a/` is the folder `a`."""
    segments = path.removeprefix("/").split("/")
    if segments[-1] == "":
        segments.pop()
    return tuple(segments)
