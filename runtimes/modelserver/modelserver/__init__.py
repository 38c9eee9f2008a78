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
)
from .model import Model  # noqa: E402
from .core.repository import ModelRepository  # noqa: E402
from .server import ModelServer, serve  # noqa: E402
from .types import InferRequest, InferResponse, RequestedOutput, Tensor, TensorSpec  # noqa: E402

__all__ = [
    "InferRequest",
    "InferResponse",
    "InvalidInput",
    "Model",
    "ModelFailed",
    "ModelNotFound",
    "ModelNotReady",
    "ModelRepository",
    "ModelServer",
    "RequestedOutput",
    "ServingError",
    "Tensor",
    "TensorSpec",
    "serve",
]
