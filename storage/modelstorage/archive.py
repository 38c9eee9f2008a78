"""Unpack .tar, .tar.gz, .tgz and .zip archives, refusing members that would escape."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from .errors import StorageError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def unpack(archive: Path, dest: Path) -> None:
    """Extract into `dest`. Absolute paths, `..`, links pointing out and device files are
    refused with the member's name; nothing is written outside `dest`."""
    if archive.name.lower().endswith(".zip"):
        _unzip(archive, dest)
    else:
        _untar(archive, dest)


def _untar(archive: Path, dest: Path) -> None:
    try:
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                if member.name.startswith(("/", "\\")):  # the data filter would strip it
                    raise StorageError(f"refusing to unpack {archive.name}: member "
                                       f"{member.name!r} has an absolute path")
            # The "data" filter (PEP 706) refuses '..', links leaving dest and special files:
            # the checks this needs, kept by CPython.
            tar.extractall(dest, filter="data")
    except tarfile.FilterError as exc:
        raise StorageError(f"refusing to unpack {archive.name}: {exc}") from None
    except (tarfile.TarError, EOFError) as exc:
        raise StorageError(f"{archive.name} is not a readable tar archive: {exc}") from None


def _unzip(archive: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zipped:
            for name in zipped.namelist():
                path = PurePosixPath(name.replace("\\", "/"))
                if path.is_absolute() or ".." in path.parts or ":" in path.parts[0]:
                    raise StorageError(f"refusing to unpack {archive.name}: member {name!r} "
                                       "would land outside the model directory")
            zipped.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise StorageError(f"{archive.name} is not a readable zip archive: {exc}") from None
