"""The scikit-learn version that saved a model file, read without loading it: every estimator's
pickled state holds `_sklearn_version`. Used when a load fails, so that the error can say which
version would load the file (a load that succeeds says it through scikit-learn's own
InconsistentVersionWarning)."""

from __future__ import annotations

import bz2
import lzma
import re
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

# The key, then pickle opcodes (a memo put, the string's opcode and length), then the value.
_VERSION = re.compile(rb"_sklearn_version.{1,12}?(\d+\.\d+(?:\.\d+)?(?:(?:rc|\.dev|\.post)\d+)?)",
                      re.DOTALL)
# skops writes the string as a JSON node: "content": "\"1.9.1\"".
_SKOPS_VERSION = re.compile(rb'"_sklearn_version":\s*\{[^}]*?"content":\s*"\\"([^\\"]+)\\""')
_CHUNK = 1 << 20
_KEEP = 64  # bytes carried from one chunk to the next, so a match across them is found


def saved_sklearn_version(path: Path) -> str | None:
    """The first estimator's `_sklearn_version` in a pickle, joblib file (compressed too) or
    skops archive; None when there is none or the file cannot be read."""
    try:
        if zipfile.is_zipfile(path):  # skops: the states are in schema.json
            with zipfile.ZipFile(path) as archive:
                text = archive.read("schema.json")
            match = _SKOPS_VERSION.search(text)
            return match.group(1).decode() if match else None
        tail = b""
        for chunk in _plain_chunks(path):
            data = tail + chunk
            match = _VERSION.search(data)
            if match:
                return match.group(1).decode()
            tail = data[-_KEEP:]
    except (OSError, EOFError, KeyError, ValueError, zlib.error, lzma.LZMAError):
        return None
    return None


def _plain_chunks(path: Path) -> Iterator[bytes]:
    """The file's bytes, decompressed as joblib compresses (zlib, gzip, bz2, xz, lzma)."""
    with open(path, "rb") as f:
        head = f.read(6)
        f.seek(0)
        decompressor = _decompressor(head)
        while chunk := f.read(_CHUNK):
            yield decompressor.decompress(chunk) if decompressor else chunk


def _decompressor(head: bytes):
    if head[:2] == b"\x1f\x8b" or head[:1] == b"\x78":
        return zlib.decompressobj(47)  # gzip or zlib, told apart by their headers
    if head[:3] == b"BZh":
        return bz2.BZ2Decompressor()
    if head.startswith(b"\xfd7zXZ") or head[:1] == b"\x5d":
        return lzma.LZMADecompressor()
    return None
