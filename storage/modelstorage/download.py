"""`download(uri, dest)`: pick the source by scheme, fetch into a staging folder, check, unpack,
then move into place. A failure leaves `dest` as it was."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from .archive import is_archive, unpack
from .errors import StorageError

log = logging.getLogger(__name__)

MARKER = ".modelstorage-marker"  # no extension: no runtime mistakes it for a model file

Fetch = Callable[[str, Path, "Progress"], None]


def download(uri: str, dest: str | os.PathLike) -> Path:
    dest = Path(dest).absolute()
    fetch = _source(uri)
    if _is_dest_itself(uri, dest):
        # KServe points STORAGE_URI at the (read-only) model mount once its initializer ran.
        log.info("%s is the model directory itself; nothing to download", uri)
        return dest
    if is_complete(dest, uri):
        log.info("%s already holds %s; not downloading again", dest, uri)
        return dest
    stage = _make_stage(dest)
    try:
        progress = Progress(uri)
        fetch(uri, stage, progress)
        files = [p for p in stage.rglob("*") if p.is_file()]
        if len(files) == 1 and is_archive(files[0].name):
            unpack(files[0], stage)
            files[0].unlink()
        _write_marker(stage, uri)
        _commit(stage, dest)
        progress.done()
    except StorageError as exc:
        raise StorageError(str(exc) if uri in str(exc) else f"{uri}: {exc}") from None
    except OSError as exc:
        raise StorageError(f"{uri}: {exc}") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return dest


def _source(uri: str) -> Fetch:
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme == "s3":
        from .s3 import fetch
    elif scheme == "gs":
        from .gcs import fetch
    elif scheme in ("http", "https"):
        from .azure import is_azure_url

        if is_azure_url(uri):
            from .azure import fetch
        else:
            from .http import fetch
    elif scheme in ("", "file", "pvc"):
        from .local import fetch
    else:
        raise StorageError(f"{uri}: unsupported scheme {scheme!r}; use s3://, gs://, http(s)://, "
                           "pvc://, file:// or a local path")
    return fetch


def _is_dest_itself(uri: str, dest: Path) -> bool:
    if "://" in uri and not uri.startswith(("file://", "pvc://")):
        return False
    from .local import local_path

    try:
        return local_path(uri).resolve() == dest.resolve()
    except OSError:
        return False


def safe_path(stage: Path, relative: str) -> Path:
    """`stage/relative`, refusing object names that would climb out of it."""
    target = (stage / relative).resolve()
    if not relative or not target.is_relative_to(stage.resolve()):
        raise StorageError(f"refusing object name {relative!r}: it leaves the model directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


# -- staging and commit ---------------------------------------------------------------------------
def _make_stage(dest: Path) -> Path:
    """A folder beside `dest`; inside it when the parent is not writable (a volume mount)."""
    for parent in (dest.parent, dest):
        try:
            parent.mkdir(parents=True, exist_ok=True)
            stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.download-", dir=parent))
            stage.chmod(0o755)  # mkdtemp makes it private; the server may run as another user
            return stage
        except OSError:  # not permitted, or a read-only file system
            continue
    raise StorageError(f"cannot write to {dest} or beside it")


def _commit(stage: Path, dest: Path) -> None:
    if stage.parent == dest.parent:
        if not dest.exists():
            stage.rename(dest)
            return
        backup = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        try:
            dest.rename(backup)
        except OSError:  # a mount point: replace what is inside instead
            _replace_contents(stage, dest)
            return
        stage.rename(dest)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        _replace_contents(stage, dest)


def _replace_contents(stage: Path, dest: Path) -> None:
    for old in dest.iterdir():
        if old != stage:
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    for new in stage.iterdir():
        new.rename(dest / new.name)
    stage.rmdir()


# -- the marker: what was fetched, so a restart can skip it --------------------------------------
def _write_marker(stage: Path, uri: str) -> None:
    files = {str(p.relative_to(stage)): p.stat().st_size for p in stage.rglob("*") if p.is_file()}
    (stage / MARKER).write_text(json.dumps({"uri": uri, "files": files}))


def is_complete(dest: Path, uri: str) -> bool:
    try:
        marker = json.loads((dest / MARKER).read_text())
        return marker["uri"] == uri and all(
            (dest / name).is_file() and (dest / name).stat().st_size == size
            for name, size in marker["files"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


# -- progress ---------------------------------------------------------------------------------------
class Progress:
    """A progress line on a terminal; one log line per file otherwise."""

    def __init__(self, uri: str):
        self.uri = uri
        self.files = 0
        self.bytes = 0
        self.tty = sys.stderr.isatty()

    def file_done(self, name: str, size: int) -> None:
        self.files += 1
        self.bytes += size
        if self.tty:
            sys.stderr.write(f"\r{self.uri}: {self.files} files, {_human(self.bytes)}   ")
            sys.stderr.flush()
        else:
            log.info("fetched %s (%s)", name, _human(size))

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
        log.info("fetched %s: %d files, %s", self.uri, self.files, _human(self.bytes))


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"
