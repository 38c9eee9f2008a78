"""Local paths, file:// URIs, and pvc://claim/path (the claim mounted at PVC_MOUNT_ROOT).

Local paths are copied: the model folder stays valid whatever later happens to the source.
A claim's files are symlinked instead: the claim stays mounted for the pod's lifetime (as
KServe mounts it), and a copy would double the disk a large model takes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .errors import StorageError


def local_path(uri: str) -> Path:
    if uri.startswith("pvc://"):
        _claim, _, inside = uri[len("pvc://"):].partition("/")
        return Path(os.environ.get("PVC_MOUNT_ROOT", "/mnt/pvc")) / inside
    if uri.lower().startswith("file:"):  # file:///path, and file:/path
        return Path(unquote(urlsplit(uri).path))
    return Path(uri)


def fetch(uri: str, stage: Path, progress) -> None:
    source = local_path(uri).absolute()
    if not source.exists():
        raise StorageError(f"{source} does not exist")
    if stage.resolve().is_relative_to(source.resolve()):
        raise StorageError(f"the model directory is inside the source {source}")
    link = uri.startswith("pvc://")
    files = [p for p in source.rglob("*") if p.is_file()] if source.is_dir() else [source]
    if not files:
        raise StorageError(f"{source} is empty")
    progress.expect(len(files), sum(p.stat().st_size for p in files))

    def place(src: str, dst: str) -> None:
        if link:
            os.symlink(os.path.abspath(src), dst)
        else:
            shutil.copy2(src, dst)
        progress.file_done(os.path.relpath(dst, stage), os.path.getsize(src))

    if source.is_dir():
        shutil.copytree(source, stage, copy_function=place, dirs_exist_ok=True)
    else:
        place(str(source), str(stage / source.name))
