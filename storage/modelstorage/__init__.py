"""Shared model downloader: fetch a model URI into a local model directory, atomically."""

from .download import download
from .errors import Refused, StorageError
from .prefixes import UriPrefixes

__all__ = ["Refused", "StorageError", "UriPrefixes", "download"]
