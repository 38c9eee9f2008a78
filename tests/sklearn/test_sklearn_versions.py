"""Models pickled by another scikit-learn (tests/sklearn/data, made by scikit-learn 1.5.2): the
server names both versions and the image build that has the saving one, in its log when the
model loads and in the error when it does not."""

from __future__ import annotations

import bz2
import gzip
import lzma
import pickle
import shutil
import zlib
from pathlib import Path

import joblib
import pytest
import requests
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearnserver.saved import saved_sklearn_version

DATA = Path(__file__).parent / "data"
BUILD = "make build-sklearnserver FRAMEWORK_VERSION=1.5.2"


@pytest.fixture(scope="module")
def server(launch, tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    for name, file in [("columns", "columns-sklearn-1.5.2.joblib"),
                       ("plain", "plain-sklearn-1.5.2.joblib")]:
        (root / name).mkdir()
        shutil.copy(DATA / file, root / name / "model.joblib")
    return launch("-m", "sklearnserver", "--model_dir", str(root))


def test_a_model_that_does_not_load_names_both_versions_and_the_build(server):
    index = requests.post(server.url + "/v2/repository/index").json()
    columns = next(m for m in index if m["name"] == "columns")
    assert columns["state"] == "UNAVAILABLE"
    for text in ("_RemainderColsList", "saved with scikit-learn 1.5.2",
                 f"this server runs {sklearn.__version__}", BUILD):
        assert text in columns["reason"], columns["reason"]
    again = requests.post(server.url + "/v2/repository/models/columns/load")
    assert again.status_code == 500 and BUILD in again.json()["error"]


def test_a_model_that_loads_is_logged_with_both_versions(server):
    assert requests.get(server.url + "/v2/models/plain/ready").status_code == 200
    warning = next(line for line in server.output().splitlines()
                   if "was saved with scikit-learn 1.5.2" in line)
    assert f"this server runs {sklearn.__version__}" in warning and BUILD in warning


def test_the_models_of_this_version_are_not_flagged(iris_server):
    assert "was saved with" not in iris_server.output()


@pytest.mark.parametrize("compress", [0, 3, ("gzip", 3), ("bz2", 3), ("xz", 3), ("lzma", 3)])
def test_the_saving_version_is_read_from_joblib_files(tmp_path, compress):
    path = tmp_path / "model.joblib"
    joblib.dump(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), path, compress=compress)
    assert saved_sklearn_version(path) == sklearn.__version__


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_the_saving_version_is_read_from_every_pickle_protocol(tmp_path, protocol):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(LogisticRegression(), protocol=protocol))
    assert saved_sklearn_version(path) == sklearn.__version__


def test_the_saving_version_is_read_from_skops_and_old_files(tmp_path):
    import skops.io as sio

    sio.dump(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), tmp_path / "m.skops")
    assert saved_sklearn_version(tmp_path / "m.skops") == sklearn.__version__
    assert saved_sklearn_version(DATA / "columns-sklearn-1.5.2.joblib") == "1.5.2"


@pytest.mark.parametrize("compress", [gzip.compress, zlib.compress, bz2.compress,
                                      lzma.compress, lambda data: data])
def test_files_without_a_version_say_none(tmp_path, compress):
    path = tmp_path / "model.pkl"
    path.write_bytes(compress(pickle.dumps({"weights": [1.0, 2.0]})))
    assert saved_sklearn_version(path) is None
    (tmp_path / "truncated.pkl").write_bytes(compress(b"\x80\x04" + b"x" * 100)[:20])
    assert saved_sklearn_version(tmp_path / "truncated.pkl") is None
