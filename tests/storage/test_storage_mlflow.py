"""models:/ and runs:/ against a real `mlflow server` on loopback, through MLflow's client."""

from pathlib import Path

import pytest

from modelstorage import StorageError, download
from modelstorage.atomic import MARKER


@pytest.fixture
def registry(mlflow_server, monkeypatch):
    url, made = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a refused URI fails at once
    return made


def predictions(model_dir: Path) -> list:
    """What the downloaded folder predicts for one flower of each kind, loaded by MLflow."""
    import mlflow.pyfunc
    from sklearn.datasets import load_iris

    return mlflow.pyfunc.load_model(str(model_dir)).predict(load_iris().data[::50]).tolist()


def test_models_version_and_alias(registry, tmp_path):
    """A registered version and an alias give the model folder itself, MLmodel at its top,
    which MLflow loads and which predicts as the model that was logged."""
    one = download("models:/iris/1", tmp_path / "one")
    assert (one / "MLmodel").is_file() and (one / "requirements.txt").is_file()
    assert predictions(one) == registry["v1"]["predictions"]
    two = download("models:/iris/2", tmp_path / "two")
    assert predictions(two) == registry["v2"]["predictions"] != registry["v1"]["predictions"]
    champion = download("models:/iris@champion", tmp_path / "champion")
    assert sorted(p.name for p in champion.iterdir()) == sorted(p.name for p in one.iterdir())
    assert (champion / "MLmodel").read_text() == (one / "MLmodel").read_text()
    assert not [p for p in tmp_path.rglob(".modelstorage-tmp*")]


def test_runs_folder_and_file(registry, tmp_path):
    run = registry["artifacts"]["run"]
    folder = download(f"runs:/{run}/extra", tmp_path / "a")
    assert {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} == {
        "notes.txt", "sub/weights.bin", MARKER}
    assert (folder / "sub" / "weights.bin").read_bytes() == bytes(range(256))
    single = download(f"runs:/{run}/extra/notes.txt", tmp_path / "b")
    assert sorted(p.name for p in single.iterdir()) == [MARKER, "notes.txt"]


def test_into_an_existing_folder_and_kept_when_complete(registry, tmp_path):
    dest = tmp_path / "models"
    dest.mkdir()
    (dest / "old.pkl").write_bytes(b"old")
    download("models:/iris@champion", dest)
    assert not (dest / "old.pkl").exists() and (dest / "MLmodel").is_file()
    marker = (dest / MARKER).read_text()
    download("models:/iris@champion", dest)  # complete: not fetched again
    assert (dest / MARKER).read_text() == marker


@pytest.mark.parametrize("uri,message", [
    ("models:/nosuch/1", "RESOURCE_DOES_NOT_EXIST"),
    ("models:/iris/99", "RESOURCE_DOES_NOT_EXIST"),
    ("models:/iris@nosuchalias", "nosuchalias"),
    ("runs:/0123456789abcdef0123456789abcdef/model", "Run .* not found")])
def test_unknown_models_and_runs_are_named(registry, tmp_path, retries, uri, message):
    with pytest.raises(StorageError, match=f"^{uri}: .*{message}"):
        download(uri, tmp_path / "d")
    assert not retries and not any(tmp_path.iterdir())


def test_without_or_with_an_unreachable_tracking_server(tmp_path, monkeypatch):
    with pytest.raises(StorageError, match="MLFLOW_TRACKING_URI is not set"):
        download("models:/iris/1", tmp_path / "d")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(StorageError, match="^models:/iris/1: .*127.0.0.1:9"):
        download("models:/iris/1", tmp_path / "d")
    assert not any(tmp_path.iterdir())
