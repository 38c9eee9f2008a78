"""All-or-nothing: files land in a staging folder on DEST's filesystem and move into place by
rename once everything has arrived and checked out. A marker records what was fetched, and a lock
keeps two downloads into one DEST from running at once."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import StorageError

log = logging.getLogger("modelstorage")

MARKER = ".modelstorage-marker"  # no extension: no runtime mistakes it for a model file
TEMP = ".modelstorage-tmp-"  # hidden: runtimes and repository scans skip dot-names
LOCK = ".modelstorage-lock"


@contextmanager
def locked(dest: Path) -> Iterator[None]:
    """Hold DEST's lock (`flock`, so the kernel releases it when its holder dies, however) while
    the body runs: downloads into one DEST take turns. Every staging folder of DEST was made by a
    lock holder, so the one holding it knows that any it finds was left by a download that died.

    The lock file sits inside DEST once DEST exists (a mount point's parent may be read-only),
    beside it until then, and is removed at the end: a waiter that then gets the lock of a
    removed file, or of the place DEST used to lock before it appeared, locks again."""
    while True:
        path = _lock_path(dest)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # writable: NFS locks need it
        except OSError as exc:
            raise StorageError(f"cannot write to {path.parent}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another download into %s to finish", dest)
            fcntl.flock(fd, fcntl.LOCK_EX)
        if _lock_path(dest) == path and _same_file(fd, path):
            break
        os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # before unlocking: see above
        os.close(fd)


def _lock_path(dest: Path) -> Path:
    return dest / LOCK if dest.is_dir() else dest.parent / f"{LOCK}-{dest.name}"


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), path.stat())
    except FileNotFoundError:
        return False


def make_stage(dest: Path) -> Path:
    """Inside DEST when it exists (it may be a mount point, e.g. an emptyDir at /mnt/models,
    which cannot be renamed and may sit on another filesystem than its parent); else beside
    it, to become DEST by one rename."""
    if dest.exists() and not dest.is_dir():
        raise StorageError(f"{dest} exists and is not a folder")
    parent, prefix = (dest, TEMP) if dest.is_dir() else (dest.parent, f"{TEMP}{dest.name}-")
    _remove_stale(parent, prefix)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    except OSError as exc:
        raise StorageError(f"cannot write to {parent}: {exc.strerror or exc}") from None
    stage.chmod(0o755)  # mkdtemp makes it private; the server may run as another user
    return stage


def _remove_stale(parent: Path, prefix: str) -> None:
    """What a killed download left behind: called with DEST's lock held, so no live download
    owns one (mkdtemp adds 8 characters: `a-` never matches `a-b-`'s leftovers)."""
    for stale in parent.glob(prefix + "?" * 8) if parent.is_dir() else ():
        log.info("removing %s, left by an interrupted download", stale)
        shutil.rmtree(stale, ignore_errors=True)


def commit(stage: Path, dest: Path) -> None:
    if stage.parent == dest:
        _swap_contents(stage, dest)
    else:
        stage.rename(dest)  # dest did not exist (or is an empty folder): one atomic step


def _swap_contents(stage: Path, dest: Path) -> None:
    """Old entries out to a folder inside DEST, new ones in: renames only, so the window is
    short, and rolled back on failure. The old marker leaves first and the new one arrives
    last, so a swap cut short (SIGKILL) never looks complete and is fetched again."""
    old = Path(tempfile.mkdtemp(prefix=TEMP, dir=dest))
    current = sorted((p for p in dest.iterdir() if p not in (stage, old) and p.name != LOCK),
                     key=lambda p: p.name != MARKER)
    new = sorted(stage.iterdir(), key=lambda p: p.name == MARKER)
    moved_in: list[Path] = []
    try:
        for entry in current:
            entry.rename(old / entry.name)
        for entry in new:
            entry.rename(dest / entry.name)
            moved_in.append(entry)
    except OSError:
        for entry in moved_in:
            (dest / entry.name).rename(entry)
        for entry in sorted(old.iterdir(), key=lambda p: p.name == MARKER):
            entry.rename(dest / entry.name)
        old.rmdir()
        raise
    shutil.rmtree(old, ignore_errors=True)


def safe_path(stage: Path, relative: str) -> Path:
    """`stage/relative` with its parent folders made, refusing names that climb out of it.
    Lexical (no resolve(): thousands of files): nothing in a fresh stage is a symlink."""
    base = os.path.normpath(stage)
    target = os.path.normpath(os.path.join(base, relative))
    if not relative or os.path.commonpath([base, target]) != base or target == base:
        raise StorageError(f"refusing object name {relative!r}: it leaves the model directory")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    return Path(target)


def write_marker(stage: Path, uri: str) -> None:
    files = {str(p.relative_to(stage)): p.stat().st_size
             for p in sorted(stage.rglob("*")) if p.is_file()}
    (stage / MARKER).write_text(json.dumps({"uri": uri, "files": files}, indent=1))


def is_complete(dest: Path, uri: str) -> bool:
    """DEST holds what a finished download of `uri` left: every file, at its size."""
    try:
        marker = json.loads((dest / MARKER).read_text())
        return marker["uri"] == uri and all(
            (dest / name).is_file() and (dest / name).stat().st_size == size
            for name, size in marker["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
