"""Errors that map to a protocol status. Transports translate them; nothing else does."""


class ServingError(Exception):
    """An error with a protocol-level meaning. `status` is the HTTP status code."""

    status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidInput(ServingError):
    status = 400


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
