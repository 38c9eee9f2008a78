"""PyTorch runtime: serves torch.export archives (.pt2) and TorchScript (.pt)."""

from .model import TorchModel

__all__ = ["TorchModel"]
