"""Local paths, file:// URIs and pvc://claim/path (the claim is mounted at PVC_MOUNT_ROOT)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .errors import StorageError


def local_path(uri: str) -> Path:
    if uri.startswith("pvc://"):
        # KServe mounts the claim at /mnt/pvc; the path after the claim name is inside it.
        _claim, _, rest = uri[len("pvc://"):].partition("/")
        return Path(os.environ.get("PVC_MOUNT_ROOT", "/mnt/pvc")) / rest
    if uri.startswith("file://"):
        return Path(unquote(urlsplit(uri).path))
    return Path(uri)


def fetch(uri: str, stage: Path, progress) -> None:
    """Copies rather than links: the model folder stays valid whatever happens to the source."""
    source = local_path(uri)
    if not source.exists():
        raise StorageError(f"{uri}: {source} does not exist")
    if source.is_file():
        shutil.copy2(source, stage / source.name)
        progress.file_done(source.name, source.stat().st_size)
        return
    for path in sorted(source.rglob("*")):
        if path.is_file():
            target = stage / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            progress.file_done(str(path.relative_to(source)), target.stat().st_size)
    if not any(stage.iterdir()):
        raise StorageError(f"{uri}: {source} is empty")
