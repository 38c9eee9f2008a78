"""MLflow runtime: serves any MLflow pyfunc model folder over KServe v1, Open Inference Protocol
v2, and MLflow's own scoring protocol (/invocations, /ping)."""

from .model import MLflowModel
from .scoring import ROUTES, invocations

# Extra REST routes, for a core that serves a model class's `routes` (see core-hook.patch).
MLflowModel.routes = ROUTES

__all__ = ["MLflowModel", "ROUTES", "invocations"]
