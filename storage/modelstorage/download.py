"""`download(uri, dest)`: pick the backend by scheme, fetch into a staging folder, unpack a lone
archive, then move everything into place. A failure leaves DEST as it was."""

from __future__ import annotations

import importlib
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from .archive import is_archive, unpack
from .atomic import TEMP, commit, is_complete, locked, make_stage, write_marker
from .errors import StorageError, not_installed, scrub
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


def download(uri: str, dest: str | os.PathLike, *,
             allow_redirect: Callable[[str], bool] | None = None) -> Path:
    """Fetch `uri` into the folder `dest` and return it (absolute). Raises StorageError, whose
    message names the URI and the cause, for every failure. Messages, logs and the marker show
    the URI without the secrets it may carry (a SAS token, a signature, a password).

    `allow_redirect(url)` is asked about every http(s) redirect before it is followed; one it
    does not allow fails the download with `Refused`."""
    dest = Path(dest).absolute()
    shown = scrub(uri, uri)
    try:
        return _download(uri, shown, dest, allow_redirect)
    except StorageError as exc:
        message = scrub(str(exc), uri)
        raise type(exc)(message if message.startswith(shown) else f"{shown}: {message}") \
            from None
    except Exception as exc:  # a disk error or one no backend classified: still one message
        log.debug("downloading %s failed", shown, exc_info=True)
        if isinstance(exc, OSError) and exc.strerror:
            cause = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
        else:
            cause = f"{type(exc).__name__}: {exc}"
        raise StorageError(f"{shown}: {scrub(cause, uri)}") from exc


def _download(uri: str, shown: str, dest: Path,
              allow_redirect: Callable[[str], bool] | None) -> Path:
    backend = _backend(uri)
    if backend.__name__.endswith(".local") and backend.local_path(uri).resolve() == dest.resolve():
        log.info("%s is the model directory itself; nothing to fetch", shown)
        return dest
    if _already_there(dest, shown):  # first without the lock: a read-only DEST may hold it
        return dest
    with locked(dest):
        if not _already_there(dest, shown):  # a download we waited for may have fetched it
            _fetch(backend, uri, shown, dest, allow_redirect)
    return dest


def _already_there(dest: Path, shown: str) -> bool:
    if is_complete(dest, shown):
        log.info("%s already holds %s; not downloading it again", dest, shown)
        return True
    return False


def _fetch(backend, uri: str, shown: str, dest: Path,
           allow_redirect: Callable[[str], bool] | None) -> None:
    stage = make_stage(dest)
    try:
        progress = Progress(shown)
        if allow_redirect is not None and getattr(backend, "FOLLOWS_REDIRECTS", False):
            backend.fetch(uri, stage, progress, allow_redirect=allow_redirect)
        else:
            backend.fetch(uri, stage, progress)
        _unpack_lone_archive(stage)
        write_marker(stage, shown)  # two URIs that differ only in a SAS name the same files
        commit(stage, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    progress.done()


def scheme_of(uri: str) -> str:
    """The URI's scheme, lower-case; "" for a path."""
    return match[1].lower() if (match := SCHEME.match(uri)) else ""


def _backend(uri: str):
    scheme = scheme_of(uri)
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
