"""Retries with backoff for transient failures (permanent ones fail at once), and running
downloads side by side where the first failure stops the rest."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .errors import TransientError

log = logging.getLogger("modelstorage")
T = TypeVar("T")

ATTEMPTS = 4
FIRST_DELAY = 0.5  # seconds; doubled each time, with jitter so that parallel retries spread


def with_retries(action: Callable[[], T], what: str, attempts: int = ATTEMPTS) -> T:
    delay = FIRST_DELAY
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except TransientError as exc:
            if attempt == attempts:
                raise TransientError(f"{exc} (gave up after {attempts} attempts)") from None
            log.warning("%s: %s; retrying in %.1fs (attempt %d of %d)", what, exc, delay,
                        attempt + 1, attempts)
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay *= 2
    raise AssertionError("unreachable")


def parallel(action: Callable[[T], None], items: Iterable[T], workers: int) -> None:
    items = list(items)
    with ThreadPoolExecutor(max(1, min(workers, len(items)))) as pool:
        futures = [pool.submit(action, item) for item in items]
        try:
            for future in futures:
                future.result()
        except BaseException:
            pool.shutdown(cancel_futures=True)  # the ones not started yet never will
            raise
