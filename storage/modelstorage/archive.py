"""Unpack .tar, .tar.gz, .tgz and .zip archives, refusing members that would escape and archives
that would expand past the limits (decompression bombs)."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from .errors import StorageError
from .limits import Limits

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def unpack(archive: Path, dest: Path, name: str) -> None:
    """Extract `archive`, called `name`, into `dest`. Absolute paths, `..`, links pointing out
    and device files are refused with the member's name; nothing is written outside `dest`.
    The sizes the archive declares are checked against the limits before anything is written,
    and are all that gets written: tarfile writes each member's size, zipfile stops there."""
    limits = Limits.from_env()
    if name.lower().endswith(".zip"):
        _unzip(archive, dest, name, limits)
    else:
        _untar(archive, dest, name, limits)


def _untar(archive: Path, dest: Path, name: str, limits: Limits) -> None:
    if not hasattr(tarfile, "data_filter"):
        raise StorageError("unpacking tar archives safely needs Python 3.11.4 or later")
    size, expanded = archive.stat().st_size, 0
    try:
        with tarfile.open(archive) as tar:
            # Header by header, so that a bomb is refused at the header that crosses a limit,
            # having decompressed no more than that.
            for member in tar:
                if member.name.startswith(("/", "\\")):  # the data filter would strip it
                    raise StorageError(f"refusing to unpack {name}: member "
                                       f"{member.name!r} has an absolute path")
                expanded += member.size if member.isfile() else 0
                limits.check(name, expanded, size)
            # The "data" filter (PEP 706) refuses '..', links leaving dest and special files:
            # the checks this needs, kept by CPython.
            tar.extractall(dest, filter="data")
    except tarfile.FilterError as exc:
        raise StorageError(f"refusing to unpack {name}: {exc}") from None
    except (tarfile.TarError, EOFError) as exc:
        raise StorageError(f"{name} is not a readable tar archive: {exc}") from None


def _unzip(archive: Path, dest: Path, name: str, limits: Limits) -> None:
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = zipped.infolist()
            for member in members:
                path = PurePosixPath(member.filename.replace("\\", "/"))
                if path.is_absolute() or ".." in path.parts or ":" in "".join(path.parts[:1]):
                    raise StorageError(f"refusing to unpack {name}: member {member.filename!r} "
                                       "would land outside the model directory")
            limits.check(name, sum(member.file_size for member in members),
                         archive.stat().st_size)
            zipped.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise StorageError(f"{name} is not a readable zip archive: {exc}") from None
