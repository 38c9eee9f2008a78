"""Shared model-serving core: model API, data plane, KServe v1 and Open Inference Protocol v2."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("modelserver")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

from .errors import (  # noqa: E402
    InvalidInput,
    ModelFailed,
    ModelNotFound,
    ModelNotReady,
    ServingError,
    Unavailable,
)
from .model import Model, route  # noqa: E402
from .server import ModelServer, serve  # noqa: E402
from .settings import ModelSettings  # noqa: E402
from .types import (  # noqa: E402
    InferRequest,
    InferResponse,
    Reply,
    RequestedOutput,
    RouteRequest,
    Tensor,
    TensorSpec,
)

__all__ = [
    "InferRequest",
    "InferResponse",
    "InvalidInput",
    "Model",
    "ModelFailed",
    "ModelNotFound",
    "ModelNotReady",
    "ModelServer",
    "ModelSettings",
    "Reply",
    "RequestedOutput",
    "RouteRequest",
    "ServingError",
    "Tensor",
    "TensorSpec",
    "Unavailable",
    "route",
    "serve",
]
