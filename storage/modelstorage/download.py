"""`download(uri, dest)`: pick the backend by scheme, fetch into a staging folder, unpack a lone
archive, then move everything into place. A failure leaves DEST as it was."""

from __future__ import annotations

import importlib
import logging
import os
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

from .archive import is_archive, unpack
from .atomic import TEMP, commit, is_complete, locked, make_stage, write_marker
from .errors import StorageError, not_installed
from .progress import Progress

log = logging.getLogger("modelstorage")

# scheme: (backend module, the extra that installs its SDK)
BACKENDS = {"s3": ("s3", "s3"), "gs": ("gcs", "gcs"), "http": ("http", None),
            "https": ("http", None), "hf": ("hf", "hf"), "models": ("mlflow", "mlflow"),
            "runs": ("mlflow", "mlflow"), "pvc": ("local", None), "file": ("local", None),
            "": ("local", None)}
# MLflow's URIs (models:/name/1) have one slash; a path has no scheme.
SCHEME = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*):/")
AZURE_HOST = ".blob.core.windows.net"  # KServe's Azure URIs are https:// URLs of this host


def download(uri: str, dest: str | os.PathLike) -> Path:
    """Fetch `uri` into the folder `dest` and return it (absolute). Raises StorageError, whose
    message names the URI and the cause, for every failure."""
    dest = Path(dest).absolute()
    try:
        return _download(uri, dest)
    except StorageError as exc:
        message = str(exc)
        raise StorageError(message if message.startswith(uri) else f"{uri}: {message}") from None
    except Exception as exc:  # a disk error or one no backend classified: still one message
        log.debug("downloading %s failed", uri, exc_info=True)
        if isinstance(exc, OSError) and exc.strerror:
            cause = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
        else:
            cause = f"{type(exc).__name__}: {exc}"
        raise StorageError(f"{uri}: {cause}") from exc


def _download(uri: str, dest: Path) -> Path:
    backend = _backend(uri)
    if backend.__name__.endswith(".local") and backend.local_path(uri).resolve() == dest.resolve():
        log.info("%s is the model directory itself; nothing to fetch", uri)
        return dest
    if _already_there(dest, uri):  # first without the lock: a read-only DEST may hold it
        return dest
    with locked(dest):
        if not _already_there(dest, uri):  # a download we waited for may have fetched it
            _fetch(backend, uri, dest)
    return dest


def _already_there(dest: Path, uri: str) -> bool:
    if is_complete(dest, uri):
        log.info("%s already holds %s; not downloading it again", dest, uri)
        return True
    return False


def _fetch(backend, uri: str, dest: Path) -> None:
    stage = make_stage(dest)
    try:
        progress = Progress(uri)
        backend.fetch(uri, stage, progress)
        _unpack_lone_archive(stage)
        write_marker(stage, uri)
        commit(stage, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    progress.done()


def _backend(uri: str):
    scheme = match[1].lower() if (match := SCHEME.match(uri)) else ""
    if scheme not in BACKENDS:
        raise StorageError(f"unsupported scheme {scheme!r}; use s3://, gs://, http(s)://, "
                           "https://<account>.blob.core.windows.net/, hf://, models:/, runs:/, "
                           "pvc://, file:// or a path")
    module, extra = BACKENDS[scheme]
    if module == "http" and (urlsplit(uri).hostname or "").endswith(AZURE_HOST):
        module, extra = "azure", "azure"
    try:  # imported on first use: an image without one SDK still serves the other schemes
        return importlib.import_module(f".{module}", __package__)
    except ImportError as exc:
        raise not_installed(exc, extra) from None


def _unpack_lone_archive(stage: Path) -> None:
    files = [p for p in stage.rglob("*") if p.is_file()]
    if len(files) == 1 and is_archive(files[0].name):
        # Out of the way first, so that a member of the same name cannot clash with it.
        archive = files[0].rename(stage / f"{TEMP}{files[0].name}")
        unpack(archive, stage, files[0].name)
        archive.unlink()
