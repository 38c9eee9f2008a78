"""MLflow's URIs: models:/<name>/<version>, models:/<name>@<alias> (and MLflow's other models:/
forms) and runs:/<run id>/<path>, resolved by MLflow's own client against the tracking server in
MLFLOW_TRACKING_URI (with its credentials: MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD) and fetched from wherever it keeps the artifacts: its proxy, S3, ....
DEST gets the model folder's contents (its MLmodel file at the top), or the one file a runs:/
URI names."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import requests
from mlflow.artifacts import download_artifacts
from mlflow.exceptions import MlflowException

from .atomic import TEMP
from .errors import StorageError, TransientError
from .retry import with_retries


def fetch(uri: str, stage: Path, progress) -> None:
    tracking = os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking:
        raise StorageError("MLFLOW_TRACKING_URI is not set: it names the MLflow server that "
                           "resolves models:/ and runs:/ URIs")
    # MLflow puts a run's folder or file inside the folder it is given: from there, the
    # contents move to the top of the stage.
    scratch = stage / f"{TEMP}mlflow"
    try:
        got = with_retries(lambda: _guard(lambda: _download(uri, tracking, scratch)), uri)
        for entry in list(got.iterdir()) if got.is_dir() else [got]:
            entry.rename(stage / entry.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    files = [p for p in stage.rglob("*") if p.is_file()]
    progress.expect(len(files), sum(p.stat().st_size for p in files))
    for path in files:
        progress.file_done(str(path.relative_to(stage)), path.stat().st_size)


def _download(uri: str, tracking: str, scratch: Path) -> Path:
    shutil.rmtree(scratch, ignore_errors=True)  # what an attempt before left
    # Ours reports progress; MLflow's bar would fill a log with carriage returns.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return Path(download_artifacts(artifact_uri=uri, dst_path=str(scratch),
                                   tracking_uri=tracking))


def _guard(call):
    """MLflow's client retries failed requests itself (MLFLOW_HTTP_REQUEST_MAX_RETRIES, with
    backoff), so what it raises is final; a body cut short is worth another attempt."""
    try:
        return call()
    except MlflowException as exc:
        raise StorageError((str(exc.message).strip() or type(exc).__name__).splitlines()[0]) \
            from None
    except (requests.RequestException, ConnectionError) as exc:
        raise TransientError(f"connection failed: {exc}") from None
