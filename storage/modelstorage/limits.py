"""Bounds on expansion: an archive or a compressed HTTP body of 1 MB can hold 1 GB of zeros (a
decompression bomb). Both limits come from the environment at each download, so the CLI's
options and a runtime's settings reach every backend the same way."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .errors import StorageError
from .progress import human

MAX_BYTES_ENV = "STORAGE_MAX_EXPANDED_BYTES"
MAX_RATIO_ENV = "STORAGE_MAX_EXPANSION_RATIO"
DEFAULT_MAX_BYTES = 100 << 30
DEFAULT_MAX_RATIO = 100  # weights hardly compress; text and sparse tensors stay well under this
# Expanding to this much is never refused for its ratio: a tiny tar.gz (tar pads to 10 KB) or a
# zero-filled tensor compresses far beyond any ratio, and this much costs nothing.
RATIO_FREE = 16 << 20
UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@dataclass(frozen=True)
class Limits:
    max_bytes: int  # 0: no limit
    max_ratio: float  # 0: no limit

    @classmethod
    def from_env(cls) -> Limits:
        return cls(_size(MAX_BYTES_ENV, DEFAULT_MAX_BYTES), _ratio(MAX_RATIO_ENV, DEFAULT_MAX_RATIO))

    def check_size(self, what: str, size: int) -> None:
        """Refuse `what` (a plain download) once it is past the size limit."""
        if self.max_bytes and size > self.max_bytes:
            raise StorageError(f"refusing {what}: it is larger than {human(self.max_bytes)}, "
                               f"the limit set by {MAX_BYTES_ENV}")

    def check(self, what: str, expanded: int, compressed: int) -> None:
        """Refuse `what` once `compressed` bytes have expanded to `expanded` past a limit."""
        if self.max_bytes and expanded > self.max_bytes:
            raise StorageError(f"refusing to unpack {what}: it expands to more than "
                               f"{human(self.max_bytes)}, the limit set by {MAX_BYTES_ENV}")
        if self.max_ratio and expanded > RATIO_FREE and expanded > self.max_ratio * compressed:
            raise StorageError(f"refusing to unpack {what}: it expands more than "
                               f"{self.max_ratio:g} times ({human(compressed)} to over "
                               f"{human(expanded)}), the limit set by {MAX_RATIO_ENV}")


def _size(name: str, default: int) -> int:
    """Bytes, optionally with a binary unit: `1073741824`, `1G`, `512Mi`, `2TiB`; 0 for none."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    match = re.fullmatch(r"(\d+)\s*([kmgt]?)(?:i?b)?", value, re.IGNORECASE)
    if not match:
        raise StorageError(f"{name} must be a size in bytes such as 10737418240 or 10G, "
                           f"not {value!r}")
    return int(match[1]) * UNITS[match[2].lower()]


def _ratio(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        ratio = float(value)
    except ValueError:
        ratio = -1
    if not ratio >= 0:  # also NaN
        raise StorageError(f"{name} must be a number such as 100 (0 for no limit), not {value!r}")
    return ratio
