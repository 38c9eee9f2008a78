"""MLflow runtime: serves any MLflow pyfunc model folder over KServe v1, Open Inference Protocol
v2, and MLflow's own scoring protocol (/invocations, /ping)."""

from .model import MLflowModel

__all__ = ["MLflowModel"]
