"""scikit-learn runtime: finds, loads and calls a scikit-learn model."""

from .model import SKLearnModel

__all__ = ["SKLearnModel"]
