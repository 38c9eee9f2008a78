class StorageError(Exception):
    """A download failed; the message names the URI and the cause."""


class TransientError(StorageError):
    """A failure worth retrying: a dropped connection, a 5xx, throttling."""
