"""Shared model downloader: fetch a model URI into a local model directory, atomically."""

from .download import download
from .errors import StorageError

__all__ = ["StorageError", "download"]
