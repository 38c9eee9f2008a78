"""The one exception callers see; backends raise TransientError for what a retry may fix."""

from urllib.parse import urlsplit


class StorageError(Exception):
    """A download failed; the message names the URI and the cause."""


class Refused(StorageError):
    """The download was asked to go somewhere it may not (a redirect the caller did not allow)."""


class TransientError(StorageError):
    """A failure worth retrying: a dropped connection, a 5xx, throttling, a failed check."""


def not_installed(exc: ImportError, extra: str) -> StorageError:
    """The SDK a scheme needs is missing: say which extra installs it."""
    return StorageError(f"{exc.name} is not installed: pip install 'modelstorage[{extra}]'")


def scrub(text: str, uri: str) -> str:
    """`text` (a message, or `uri` itself) without the secrets `uri` may carry: its query (a SAS
    token, a presigned URL's signature) and a password. Short ones are no secrets, and replacing
    them would garble the text."""
    parts = urlsplit(uri)
    if len(parts.query) >= 8:
        text = text.replace(parts.query, "REDACTED")
    if parts.password:
        text = text.replace(f":{parts.password}@", ":REDACTED@")
    return text
