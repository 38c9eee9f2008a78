"""Unpack .tar, .tar.gz, .tgz and .zip archives, refusing members that would escape."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from .errors import StorageError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def unpack(archive: Path, dest: Path, name: str) -> None:
    """Extract `archive`, called `name`, into `dest`. Absolute paths, `..`, links pointing out
    and device files are refused with the member's name; nothing is written outside `dest`."""
    if name.lower().endswith(".zip"):
        _unzip(archive, dest, name)
    else:
        _untar(archive, dest, name)


def _untar(archive: Path, dest: Path, name: str) -> None:
    if not hasattr(tarfile, "data_filter"):
        raise StorageError("unpacking tar archives safely needs Python 3.11.4 or later")
    try:
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                if member.name.startswith(("/", "\\")):  # the data filter would strip it
                    raise StorageError(f"refusing to unpack {name}: member "
                                       f"{member.name!r} has an absolute path")
            # The "data" filter (PEP 706) refuses '..', links leaving dest and special files:
            # the checks this needs, kept by CPython.
            tar.extractall(dest, filter="data")
    except tarfile.FilterError as exc:
        raise StorageError(f"refusing to unpack {name}: {exc}") from None
    except (tarfile.TarError, EOFError) as exc:
        raise StorageError(f"{name} is not a readable tar archive: {exc}") from None


def _unzip(archive: Path, dest: Path, name: str) -> None:
    try:
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.namelist():
                path = PurePosixPath(member.replace("\\", "/"))
                if path.is_absolute() or ".." in path.parts or ":" in "".join(path.parts[:1]):
                    raise StorageError(f"refusing to unpack {name}: member {member!r} "
                                       "would land outside the model directory")
            zipped.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise StorageError(f"{name} is not a readable zip archive: {exc}") from None
