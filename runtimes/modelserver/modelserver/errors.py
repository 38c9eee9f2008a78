"""Errors that map to a protocol status. Transports translate them; nothing else does."""

from __future__ import annotations


class ServingError(Exception):
    """An error with a protocol-level meaning. `status` is the HTTP status code; `headers` are
    what a REST answer carries besides its JSON body."""

    status = 500
    headers: tuple[tuple[bytes, bytes], ...] = ()

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def reworded(self, message: str) -> ServingError:
        """The same error, saying `message` instead."""
        return _restore(type(self), message)

    def __reduce__(self):
        # Pickled as its class and message (worker processes hand errors to each other): the
        # subclasses' constructors take other arguments than the message.
        return _restore, (type(self), self.message)


def _restore(cls: type[ServingError], message: str) -> ServingError:
    error = cls.__new__(cls)
    ServingError.__init__(error, message)
    return error


class InvalidInput(ServingError):
    status = 400


class Unauthenticated(ServingError):
    """The call needs credentials it did not carry, or carried wrong ones."""

    status = 401
    headers = ((b"www-authenticate", b'Bearer realm="modelserver"'),)


class Forbidden(ServingError):
    """The caller, or what it asks for, is not allowed."""

    status = 403


class NotFound(ServingError):
    status = 404


class ModelNotFound(NotFound):
    def __init__(self, name: str, version: str | None = None):
        what = f"model '{name}'" if version is None else f"model '{name}' version '{version}'"
        super().__init__(f"{what} not found")


class MethodNotAllowed(ServingError):
    status = 405


class Conflict(ServingError):
    """The request does not fit the server's state (a repository that polls its folder)."""

    status = 409


class PayloadTooLarge(ServingError):
    status = 413


class ModelNotReady(ServingError):
    status = 503

    def __init__(self, name: str, reason: str = "it is not ready"):
        super().__init__(f"model '{name}' is not ready: {reason}")


class Unavailable(ServingError):
    status = 503


class Timeout(ServingError):
    status = 504


class ModelFailed(ServingError):
    """The model's own code raised: the only source of a 500."""

    status = 500


class Unsupported(ServingError):
    status = 501
