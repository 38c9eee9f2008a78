"""A real `mlflow server` on 127.0.0.1 (SQLite registry, artifacts on disk served by its
proxy) for the tests of tests/storage and tests/images: `running_registry(folder)`.

Run as a script, this file fills the server that MLFLOW_TRACKING_URI names, in a process of its
own so that the tests' process keeps no MLflow state: the scikit-learn model `iris`, version 1
(alias `champion`) and version 2, and a run with plain artifacts. It prints what it made as
JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ports import free_port


@contextmanager
def running_registry(folder: Path) -> Iterator[tuple[str, dict]]:
    """(the server's URL, what this script registered there) while the server runs."""
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": url}
    # The script imports MLflow while the server starts, then waits for it.
    seeding = subprocess.Popen([sys.executable, __file__], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=folder, env=env)
    with open(folder / "server.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
             url.rsplit(":", 1)[1], "--workers", "1", "--backend-store-uri",
             f"sqlite:///{folder}/mlflow.db", "--artifacts-destination",
             str(folder / "artifacts")], stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    try:
        out, err = seeding.communicate(timeout=300)
        if seeding.returncode:
            raise RuntimeError(f"filling the MLflow registry failed:\n{err[-3000:]}\nserver:\n"
                               f"{(folder / 'server.log').read_text(errors='replace')[-3000:]}")
        yield url, json.loads(out.strip().splitlines()[-1])
    finally:
        seeding.kill()
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


def wait_for_server(timeout: float = 180) -> None:
    """Started beside the server (importing MLflow takes as long as starting it): until it
    answers."""
    import mlflow
    import requests

    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{mlflow.get_tracking_uri()}/health", timeout=5).ok:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the MLflow server did not answer")
        time.sleep(0.2)


def main() -> None:
    import mlflow
    from mlflow import MlflowClient
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    wait_for_server()
    features, labels = load_iris(return_X_y=True)
    made = {}
    for version in (1, 2):  # version 2 learns shifted labels, so that the two tell apart
        with mlflow.start_run() as run:
            model = LogisticRegression(max_iter=500).fit(features, (labels + version - 1) % 3)
            # Requirements given: inferring them loads the model in another process (slow).
            mlflow.sklearn.log_model(model, name="model", registered_model_name="iris",
                                     pip_requirements=["scikit-learn"])
            made[f"v{version}"] = {"run": run.info.run_id,
                                   "predictions": model.predict(features[::50]).tolist()}
    MlflowClient().set_registered_model_alias("iris", "champion", "1")
    with mlflow.start_run() as run, tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "notes.txt").write_text("plain artifacts")
        (Path(folder) / "sub").mkdir()
        (Path(folder) / "sub" / "weights.bin").write_bytes(bytes(range(256)))
        mlflow.log_artifacts(folder, artifact_path="extra")
        made["artifacts"] = {"run": run.info.run_id}
    print(json.dumps(made))


if __name__ == "__main__":
    main()
