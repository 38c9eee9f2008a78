"""TLS for REST and gRPC from PEM files that may be replaced while the server runs: cert-manager
renews a certificate by replacing its Secret, and the kubelet swaps the mounted files.

Every new connection gets what the files hold now. They are looked at (a stat each) at most once
a second, and loaded again when one of them changed. Files that do not load together (a new
certificate whose key has not arrived yet) leave the last good ones in use, with a warning, until
they change again. Connections already open keep what they started with.

REST: the event loop is given one SSLContext whose `wrap_bio`, called once per connection,
wraps it with the context made from the current files. gRPC: the server's credentials ask a
fetcher at each handshake, which hands over a new configuration when the files changed. With
`ca_certs`, both require a client certificate that one of those CAs signed (mutual TLS)."""

from __future__ import annotations

import logging
import os
import ssl
import time
from pathlib import Path

log = logging.getLogger(__name__)

CHECK_SECONDS = 1.0


class TlsFiles:
    """The certificate chain, its key and optionally the client CAs, as files on disk."""

    def __init__(self, certfile: str, keyfile: str, ca_certs: str | None = None):
        self.paths = [Path(certfile), Path(keyfile)] + ([Path(ca_certs)] if ca_certs else [])
        self.mutual = ca_certs is not None
        self._seen: list | None = None
        self._checked = 0.0

    @classmethod
    def from_args(cls, args) -> TlsFiles | None:
        if not args.ssl_certfile:
            return None
        return cls(args.ssl_certfile, args.ssl_keyfile, args.ssl_ca_certs)

    def check(self) -> ssl.SSLContext:
        """A server context made from the files now; ValueError, naming them, if they do not
        make one."""
        certfile, keyfile, *ca = self.paths
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(certfile, keyfile)
            if ca:
                context.load_verify_locations(ca[0])
        except (OSError, ssl.SSLError) as exc:
            names = ", ".join(str(p) for p in self.paths)
            raise ValueError(f"TLS files ({names}) do not load: {exc}") from None
        if ca:
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def changed(self) -> bool:
        """Whether a file changed since the last call that said so (looked at once a second;
        the first call says so)."""
        now = time.monotonic()
        if self._seen is not None and now - self._checked < CHECK_SECONDS:
            return False
        self._checked = now
        seen = [_identity(path) for path in self.paths]
        if seen == self._seen:
            return False
        self._seen = seen
        return True

    def reload(self, make):
        """`make()` if the files changed and make it, else None (a failure is logged)."""
        if not self.changed():
            return None
        try:
            made = make()
        except ValueError as exc:
            log.warning("%s; still serving the certificate loaded before", exc)
            return None
        log.info("TLS certificate loaded from %s", self.paths[0])
        return made

    # -- REST ---------------------------------------------------------------------------------
    def rest_context(self) -> ssl.SSLContext:
        """The context to give the event loop (asyncio or uvloop)."""
        return _Reloading(self)

    def http_context(self) -> ssl.SSLContext:
        """A context made from the files now, for HTTP/1.1."""
        context = self.check()
        context.set_alpn_protocols(["http/1.1"])
        return context

    # -- gRPC ---------------------------------------------------------------------------------
    def grpc_credentials(self):
        import grpc

        def fetch():  # called by gRPC's own threads at each handshake: it must not raise
            try:
                return self.reload(self.grpc_configuration)
            except Exception:  # noqa: BLE001 - logged; the handshake goes on with the old one
                log.exception("reloading the TLS files for gRPC failed")
                return None

        return grpc.dynamic_ssl_server_credentials(
            self.reload(self.grpc_configuration) or self.grpc_configuration(), fetch,
            require_client_authentication=self.mutual)

    def grpc_configuration(self):
        """gRPC's certificate configuration from the files now."""
        import grpc

        self.check()  # gRPC takes the bytes as they are: a key that does not fit fails here
        certfile, keyfile, *ca = (path.read_bytes() for path in self.paths)
        return grpc.ssl_server_certificate_configuration([(keyfile, certfile)],
                                                          root_certificates=ca[0] if ca else None)


class _Reloading(ssl.SSLContext):
    """An SSLContext whose connections get the context the files make now."""

    def __new__(cls, files: TlsFiles):
        return super().__new__(cls, ssl.PROTOCOL_TLS_SERVER)

    def __init__(self, files: TlsFiles):
        self.files = files
        self.current = files.reload(files.http_context) or files.http_context()

    def wrap_bio(self, incoming, outgoing, server_side=False, server_hostname=None,
                 session=None):
        self.current = self.files.reload(self.files.http_context) or self.current
        return self.current.wrap_bio(incoming, outgoing, server_side, server_hostname, session)


def _identity(path: Path) -> tuple | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_dev, stat.st_size, stat.st_mtime_ns
