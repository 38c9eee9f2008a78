"""Fills an MLflow tracking server (MLFLOW_TRACKING_URI) for tests/storage, in a process of its
own so that the tests' process keeps no MLflow state: the scikit-learn model `iris`, version 1
(alias `champion`) and version 2, and a run with plain artifacts. Prints what it made as JSON."""

import json
import tempfile
import time
from pathlib import Path

import mlflow
import requests
from mlflow import MlflowClient
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def wait_for_server(timeout: float = 180) -> None:
    """Started beside the server (importing MLflow takes as long as starting it): until it
    answers."""
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
