"""The one exception callers see; backends raise TransientError for what a retry may fix."""


class StorageError(Exception):
    """A download failed; the message names the URI and the cause."""


class TransientError(StorageError):
    """A failure worth retrying: a dropped connection, a 5xx, throttling, a failed check."""
