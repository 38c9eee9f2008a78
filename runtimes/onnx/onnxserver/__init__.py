"""ONNX Runtime runtime: serves .onnx models on the CPU."""

from .model import OnnxModel

__all__ = ["OnnxModel"]
