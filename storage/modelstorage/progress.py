"""A progress bar on a terminal; one log line per file otherwise (logs are read line by line)."""

from __future__ import annotations

import logging
import sys
import threading
import time

log = logging.getLogger("modelstorage")

WIDTH = 24
REDRAW = 0.1  # seconds between redraws: cheap enough for thousands of small files


class Progress:
    """Thread-safe: the backends report from their worker threads."""

    def __init__(self, uri: str, tty: bool | None = None):
        self.uri = uri
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.total_files = self.total_bytes = 0
        self.files = self.bytes = 0
        self.started = self.drawn = time.monotonic()
        self.lock = threading.Lock()

    def expect(self, files: int, size: int) -> None:
        """What the listing found, when the backend knows it up front (for the bar's length)."""
        self.total_files, self.total_bytes = files, size

    def advance(self, size: int) -> None:
        """Bytes arrived, for backends that report within a file."""
        with self.lock:
            self.bytes += size
            self._draw()

    def file_done(self, name: str, size: int, counted: bool = False) -> None:
        """A file is complete; `counted` when its bytes already went through `advance`."""
        with self.lock:
            self.files += 1
            self.bytes += 0 if counted else size
            self._draw(force=self.files == self.total_files)
        if not self.tty:
            log.info("fetched %s (%s)", name, human(size))

    def done(self) -> None:
        if self.tty:
            self._draw(force=True)
            sys.stderr.write("\n")
        took = time.monotonic() - self.started
        log.info("fetched %s: %d files, %s in %.1fs", self.uri, self.files, human(self.bytes), took)

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.tty or (not force and now - self.drawn < REDRAW):
            return
        self.drawn = now
        rate = self.bytes / max(now - self.started, 1e-3)
        counts = f"{self.files}/{self.total_files or '?'} files, {human(self.bytes)}"
        if self.total_bytes:
            share = min(self.bytes / self.total_bytes, 1.0)
            filled = int(share * WIDTH)
            bar = f"[{'#' * filled}{'.' * (WIDTH - filled)}] {share:4.0%} "
            counts += f" of {human(self.total_bytes)}"
        else:
            bar = ""
        sys.stderr.write(f"\r{bar}{counts}, {human(rate)}/s\x1b[K")
        sys.stderr.flush()


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
