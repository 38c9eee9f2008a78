"""Log setup: plain text, or one JSON object per line for log collectors, and the access log."""

from __future__ import annotations

import asyncio
import atexit
import logging
import select
import sys
import time

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _utc_time(created: float) -> str:
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
            + f".{int(created % 1 * 1000):03d}Z")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": _utc_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


PIPE_BUF = getattr(select, "PIPE_BUF", 512)  # POSIX's least


class AccessLog:
    """One line per request, in the format of the other logs, written in batches.

    Through `logging`, a line cost about 40 µs in a busy server, a third of an iris request
    (record objects, caller lookup, locks, a write each). Here a line is one format and a list
    append, and lines go out together at most FLUSH_SECONDS after they were made, and at exit."""

    FLUSH_SECONDS = 0.05
    NAME = "modelserver.access"

    def __init__(self) -> None:
        self.enabled = False
        self.json = False
        self._pending: list[str] = []
        self._second = -1
        self._stamp_text = ""
        atexit.register(self.flush)

    def configure(self, enabled: bool, fmt: str) -> None:
        self.flush()
        self.enabled = enabled and logging.getLogger(self.NAME).isEnabledFor(logging.INFO)
        self.json = fmt == "json"
        self._second = -1

    def __call__(self, method: str, path: str, model: str | None, status: int,
                 seconds: float) -> None:
        if not self.enabled:
            return
        now = time.time()
        if not self.json and not path.isprintable():  # a decoded %0A would start a new line
            path = path.encode("unicode_escape").decode("ascii")
        message = f"{method} {path} {status} {seconds * 1000:.2f}ms"
        if self.json:
            entry = {"time": f"{self._stamp(now)}.{int(now % 1 * 1000):03d}Z", "level": "info",
                     "logger": self.NAME, "message": message, "method": method, "path": path,
                     "model": model, "status": status, "duration_ms": round(seconds * 1000, 3)}
            if model is None:
                del entry["model"]
            line = orjson.dumps(entry).decode()
        else:
            line = f"{self._stamp(now)},{int(now % 1 * 1000):03d} INFO {self.NAME}: {message}"
        self._pending.append(line)
        if len(self._pending) == 1:
            try:
                asyncio.get_running_loop().call_later(self.FLUSH_SECONDS, self.flush)
            except RuntimeError:  # no event loop in this thread: write now
                self.flush()

    def _stamp(self, now: float) -> str:
        """The time to the second, as the other logs write it (UTC for JSON, local for text);
        it changes rarely, so it is formatted once a second."""
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp_text = (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
                                if self.json
                                else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second)))
        return self._stamp_text

    def flush(self) -> None:
        """Write the pending lines in writes of whole lines, each at most PIPE_BUF bytes: a pipe
        (a container's stderr) keeps such a write in one piece, so the lines of several workers
        never interleave mid-line."""
        lines, self._pending = self._pending, []
        chunk: list[str] = []
        size = 0
        try:
            for line in lines:
                length = (len(line) if line.isascii() else len(line.encode())) + 1
                if chunk and size + length > PIPE_BUF:
                    self._write("".join(chunk))
                    chunk, size = [], 0
                chunk.append(line + "\n")
                size += length
            if chunk:
                self._write("".join(chunk))
        except (OSError, ValueError):  # stderr closed or gone: the lines cannot go anywhere
            pass

    @staticmethod
    def _write(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()


access_log = AccessLog()


def configure_logging(level: str = "info", fmt: str = "text", log_access: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    access_log.configure(log_access, fmt)
