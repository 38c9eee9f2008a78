"""TensorFlow runtime: serves SavedModels and Keras files through their signature functions."""

from .model import TFModel

__all__ = ["TFModel"]
