"""The one exception callers see; backends raise TransientError for what a retry may fix."""


class StorageError(Exception):
    """A download failed; the message names the URI and the cause."""


class TransientError(StorageError):
    """A failure worth retrying: a dropped connection, a 5xx, throttling, a failed check."""


def not_installed(exc: ImportError, extra: str) -> StorageError:
    """The SDK a scheme needs is missing: say which extra installs it."""
    return StorageError(f"{exc.name} is not installed: pip install 'modelstorage[{extra}]'")
