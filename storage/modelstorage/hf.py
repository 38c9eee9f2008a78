"""hf://<org>/<repo>[:<revision>][/<path>] from the Hugging Face Hub with huggingface_hub, as KServe
writes it (plus the optional path in the repository: a folder, or one file). HF_TOKEN for private
and gated repositories, HF_ENDPOINT for a mirror or a hub of one's own. The revision (a branch,
tag or commit; the default branch without one) is resolved to its commit first, so that every
file comes from that one commit."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Self

import httpx2
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                    OfflineModeIsEnabled, RepositoryNotFoundError,
                                    RevisionNotFoundError)
from huggingface_hub.hf_api import RepoFile

from .atomic import TEMP, safe_path
from .errors import StorageError, TransientError
from .retry import parallel, with_retries

PARALLEL_FILES = 8


@dataclass(frozen=True)
class Ref:
    repo: str  # org/name
    revision: str | None
    path: str  # in the repository; "" for all of it


def parse(uri: str) -> Ref:
    org, _, rest = uri[len("hf://"):].partition("/")
    name_revision, _, path = rest.partition("/")
    name, _, revision = name_revision.partition(":")
    if not org or not name:
        raise StorageError("expected hf://<org>/<repo>[:<revision>][/<path>]")
    return Ref(f"{org}/{name}", revision or None, path.strip("/"))


def fetch(uri: str, stage: Path, progress) -> None:
    ref = parse(uri)
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    commit = with_retries(lambda: _guard(lambda: api.model_info(ref.repo,
                                                                revision=ref.revision).sha), uri)
    files = with_retries(lambda: _guard(lambda: _list(api, ref, commit)), uri)
    progress.expect(len(files), sum(file.size for file, _ in files))
    # huggingface_hub keeps its own bookkeeping (.cache/huggingface) beside what it downloads:
    # files land in this hidden folder and move to their place in the stage from there.
    scratch = stage / f"{TEMP}hf"

    def one(item: tuple[RepoFile, str]) -> None:
        file, relative = item
        target = safe_path(stage, relative)
        with_retries(lambda: _guard(lambda: _download(api, ref.repo, commit, file, scratch,
                                                      target, progress)),
                     f"{uri} {file.path}")
        progress.file_done(relative, file.size, counted=True)

    try:
        parallel(one, files, PARALLEL_FILES)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _list(api: HfApi, ref: Ref, commit: str) -> list[tuple[RepoFile, str]]:
    """The files under `ref.path` as a folder, else the file `ref.path`: (file, its path here)."""
    tree = [f for f in api.list_repo_tree(ref.repo, recursive=True, revision=commit)
            if isinstance(f, RepoFile)]
    prefix = ref.path + "/" if ref.path else ""
    found = [(f, f.path[len(prefix):]) for f in tree if f.path.startswith(prefix)]
    found = found or [(f, PurePosixPath(f.path).name) for f in tree if f.path == ref.path]
    if not found:
        where = f"{ref.path} in " if ref.path else ""
        raise StorageError(f"no files {where}{ref.repo} at {ref.revision or 'its default branch'}"
                           f" ({commit[:12]})")
    return found


def _download(api: HfApi, repo: str, commit: str, file: RepoFile, scratch: Path, target: Path,
              progress) -> None:
    got = hf_hub_download(repo, file.path, revision=commit, local_dir=scratch,
                          endpoint=api.endpoint, tqdm_class=functools.partial(
                              _Meter, file.path, file.size, progress))
    Path(got).replace(target)
    _check(file, target)


def _check(file: RepoFile, path: Path) -> None:
    """The size, and the hash the Hub lists: SHA-256 for LFS files, git's blob SHA-1 for others."""
    if (size := path.stat().st_size) != file.size:
        path.unlink()
        raise TransientError(f"{file.path}: got {size} of {file.size} bytes")
    if file.lfs is not None:
        digest, expected = hashlib.sha256(), file.lfs.sha256
    else:
        digest, expected = hashlib.sha1(b"blob %d\0" % file.size), file.blob_id
    with open(path, "rb") as data:
        if hashlib.file_digest(data, lambda: digest).hexdigest() != expected:
            path.unlink()
            raise TransientError(f"{file.path}: its hash does not match the Hub's listing")


class _Meter:
    """huggingface_hub's progress bar for one file (its `tqdm_class`): reports the bytes to our
    progress, and stops a body that grows past the file's listed size, since the server picks the
    Content-Encoding and a small body can expand to any size."""

    def __init__(self, name: str, size: int, progress, **_tqdm_arguments):
        self.name, self.size, self.progress, self.n = name, size, progress, 0

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n > self.size:
            raise StorageError(f"{self.name}: the Hub sent more than its listed {self.size} bytes")
        self.progress.advance(n)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        pass

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None  # the rest of tqdm's surface only draws


def _guard(call):
    """`call()`, with huggingface_hub's exceptions as ours: transient ones retried."""
    try:
        return call()
    except (OSError, httpx2.TransportError) as exc:  # huggingface_hub's errors are OSErrors
        raise _error(exc) from None


def _error(exc: Exception) -> StorageError:
    if isinstance(exc, (GatedRepoError, RevisionNotFoundError, RepositoryNotFoundError)):
        return StorageError(_message(exc))
    if isinstance(exc, HfHubHTTPError):
        return _by_status(exc.response.status_code, _message(exc))
    if isinstance(exc, LocalEntryNotFoundError):  # a HEAD that failed, and nothing cached
        cause = exc.__cause__
        return _error(cause) if isinstance(cause, (HfHubHTTPError, httpx2.TransportError)) \
            else StorageError(_message(exc))
    if isinstance(exc, OfflineModeIsEnabled):
        return StorageError("HF_HUB_OFFLINE is set")
    if isinstance(exc, httpx2.TransportError):
        text = f"connection failed: {exc}"
        return (StorageError if "CERTIFICATE_VERIFY_FAILED" in text else TransientError)(text)
    return TransientError(_message(exc))  # "Consistency check failed": a body cut short


def _by_status(status: int, message: str) -> StorageError:
    return (TransientError if status >= 500 or status == 429 else StorageError)(message)


def _message(exc: Exception) -> str:
    """The first line that says something: huggingface_hub's go on with advice and URLs."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reasons = [line for line in lines if not line.endswith("Client Error.")]
    return (reasons or lines or [type(exc).__name__])[0]
