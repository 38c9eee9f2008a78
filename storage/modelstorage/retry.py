"""Retry transient failures with exponential backoff; permanent ones fail at once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from .errors import TransientError

log = logging.getLogger(__name__)
T = TypeVar("T")

ATTEMPTS = 4
FIRST_DELAY = 0.5


def with_retries(action: Callable[[], T], what: str, attempts: int = ATTEMPTS) -> T:
    delay = FIRST_DELAY
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except TransientError as exc:
            if attempt == attempts:
                raise
            log.warning("%s: %s; retrying in %.1fs (attempt %d of %d)", what, exc, delay,
                        attempt + 1, attempts)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")
