"""XGBoost runtime."""

from .model import XGBoostModel

__all__ = ["XGBoostModel"]
