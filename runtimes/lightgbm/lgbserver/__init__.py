"""LightGBM runtime."""

from .model import LightGBMModel

__all__ = ["LightGBMModel"]
