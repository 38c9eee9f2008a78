"""Who may use the repository API (index, load, unload), and where a load may fetch from.

Transports hand over what they know of the caller (its address, the credentials it sent); the
data plane asks here before it lists or changes the repository. Inference, health and metadata
never come here: the mesh or gateway in front guards them, as in KServe.

- Without an admin token, only clients on this host (loopback) may call: KServe's multi-model
  agent, in the same pod, still can. A request that a proxy passed on (it carries
  `Forwarded`, `X-Forwarded-For` or Envoy's `X-Envoy-External-Address`, as Knative's
  queue-proxy and Istio's sidecar add them) comes from beyond the proxy, however local the
  proxy's own connection is, and is refused.
- With `--admin_token_file`, every call, from anywhere, must carry the token as
  `Authorization: Bearer <token>`. The file is read again whenever it changes (a Kubernetes
  Secret mounted as a volume is replaced, not edited); a missing or empty file refuses every
  call. The token is compared in constant time and never logged.
- A load's `storage_uri` must lie under one of `--allowed_storage_uris` (none by default), and
  so must every http(s) redirect on the way to it."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from modelstorage import UriPrefixes
from modelstorage.errors import scrub

from ..errors import Forbidden, InvalidInput, Unauthenticated

log = logging.getLogger(__name__)

_BEARER = b"bearer"
# Headers (gRPC metadata keys) that a proxy adds to what it passes on: the original client
# is elsewhere.
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-envoy-external-address")


@dataclass(frozen=True, slots=True)
class Caller:
    """What a transport knows of who calls: the peer's IP address (None when it has none), the
    Authorization it sent (a REST header, or gRPC metadata), and whether a proxy passed the
    call on (it carries one of FORWARDING_HEADERS)."""

    address: str | None
    authorization: bytes | str | None = None
    forwarded: bool = False


class TokenFile:
    """The admin token, as the file holds it now: read again when the file is another (its
    inode, size or modification time changed)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._seen: tuple | None = None
        self._token: bytes | None = None
        self._problem: str | None = None

    def token(self) -> bytes | None:
        """The token, or None when the file is missing or empty (logged once)."""
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            self._seen = None
            return self._refuse(f"the admin token file {self.path} cannot be read: "
                                f"{exc.strerror or exc}")
        seen = (stat.st_ino, stat.st_dev, stat.st_size, stat.st_mtime_ns)
        if seen != self._seen:
            self._seen = seen
            try:
                self._token = self.read()
            except ValueError as exc:
                return self._refuse(str(exc))
            self._problem = None
            log.info("admin token read from %s", self.path)
        return self._token

    def _refuse(self, problem: str) -> None:
        if problem != self._problem:
            log.error("%s: every repository call is refused until it is fixed", problem)
        self._problem, self._token = problem, None

    def read(self) -> bytes:
        """The token in the file; ValueError, naming the file, when there is none."""
        try:
            token = self.path.read_bytes().strip()
        except OSError as exc:
            raise ValueError(f"the admin token file {self.path} cannot be read: "
                             f"{exc.strerror or exc}") from None
        if not token:
            raise ValueError(f"the admin token file {self.path} is empty")
        return token


class AccessPolicy:
    """Who may call the repository API: see the module's docstring."""

    def __init__(self, token_file: str | os.PathLike | None = None):
        self.token_file = TokenFile(token_file) if token_file else None

    def check(self, caller: Caller) -> None:
        """Raises Unauthenticated (401) or Forbidden (403) unless `caller` may call."""
        if self.token_file is not None:
            expected = self.token_file.token()
            if expected is None or not _bearer_matches(caller.authorization, expected):
                raise Unauthenticated("the repository API needs the server's admin token, sent "
                                      "as 'authorization: Bearer <token>'")
        elif caller.forwarded:
            raise Forbidden("the repository API answers only clients on this host, and this "
                            "call came through a proxy: start the server with "
                            "--admin_token_file to let others in with a token")
        elif not is_loopback(caller.address):
            raise Forbidden(f"the repository API answers only clients on this host, and "
                            f"{caller.address or 'this client'} is not one: start the server "
                            "with --admin_token_file to let others in with a token")


class SourcePolicy:
    """Where a load's `storage_uri` may point: under one of `prefixes`."""

    def __init__(self, prefixes: Iterable[str] = ()):
        self.prefixes = UriPrefixes(prefixes)  # ValueError for one that cannot be read

    def check(self, uri: object) -> None:
        """Raises Forbidden (403) unless `uri` is allowed; InvalidInput if it is no URI."""
        if not isinstance(uri, str) or not uri.strip():
            raise InvalidInput("'storage_uri' must be a non-empty string")
        shown = scrub(uri, uri)
        if not self.prefixes:
            raise Forbidden("loading from a storage_uri is off: start the server with "
                            "--allowed_storage_uris, the prefixes loads may fetch from "
                            "(e.g. s3://models/)")
        try:
            allowed = self.prefixes.allows(uri)
        except ValueError as exc:
            raise Forbidden(f"storage_uri {shown} is refused: {exc}") from None
        if not allowed:
            raise Forbidden(f"storage_uri {shown} is not under --allowed_storage_uris "
                            f"({self.prefixes})")

    def allows(self, uri: str) -> bool:
        """For a redirect on the way: whether it may be followed."""
        try:
            return self.prefixes.allows(uri)
        except ValueError:
            return False


def is_loopback(address: str | None) -> bool:
    """127.0.0.0/8, ::1, and IPv4 loopback mapped into IPv6 (`::ffff:127.0.0.1`)."""
    try:
        ip = ipaddress.ip_address((address or "").split("%")[0])  # an IPv6 zone is no part
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def _bearer_matches(authorization: bytes | str | None, expected: bytes) -> bool:
    if authorization is None:
        return False
    if isinstance(authorization, str):
        authorization = authorization.encode("utf-8", "surrogateescape")
    scheme, _, token = authorization.strip().partition(b" ")
    return scheme.lower() == _BEARER and hmac.compare_digest(token.strip(), expected)
