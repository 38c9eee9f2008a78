"""A model's files: the version folder that is served (Triton's layout), and exactly one file with
one of the framework's endings in it, or an error that says what the folder holds."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from pathlib import Path


def model_files(folder: Path, suffixes: Collection[str], skip: Collection[str] = ()) -> list[Path]:
    """The files in `folder` ending in one of `suffixes`, by name, except those named in `skip`."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix in suffixes and p.name not in skip)


def find_model_file(model_dir: str | os.PathLike, suffixes: Collection[str], framework: str, *,
                    skip: Collection[str] = (),
                    narrow: Callable[[list[Path]], list[Path]] | None = None,
                    expected: str = "", hint: str = "") -> Path:
    """The one model file in `model_dir`. `narrow` picks among several candidates; when there
    is none, `expected` says what was looked for and `hint` ends the message."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"model directory {folder} does not exist")
    found = model_files(folder, suffixes, skip)
    if narrow is not None and len(found) > 1:
        found = narrow(found)
    if not found:
        present = ", ".join(sorted(p.name + "/" * p.is_dir() for p in folder.iterdir()))
        expected = expected or f"one file ending in {', '.join(suffixes)}"
        raise FileNotFoundError(f"no {framework} model in {folder}: expected {expected}; found "
                                f"{present or 'nothing'}{hint}")
    if len(found) > 1:
        raise ValueError(f"several model files in {folder}: "
                         f"{', '.join(p.name for p in found)}; keep exactly one")
    return found[0]


def latest_version(folder: Path) -> tuple[Path, str | None]:
    """Triton's layout: numbered subfolders are versions, and the highest is served."""
    versions = [p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
    if not versions:
        return folder, None
    newest = max(versions, key=lambda p: int(p.name))
    return newest, newest.name
