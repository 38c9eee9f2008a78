"""tfserver's model folder: what it finds, and how it fails when it cannot serve."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfserver.model import TFModel, find_model

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "tensorflow-iris"


def touch_saved_model(folder: Path) -> Path:
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"")
    return folder


def test_finds_saved_model_keras_file_and_the_newest_version(tmp_path):
    plain = touch_saved_model(tmp_path / "plain")
    assert find_model(plain) == type(find_model(plain))(plain, "savedmodel", None)
    (tmp_path / "keras").mkdir()
    (tmp_path / "keras" / "model.keras").write_bytes(b"")
    (tmp_path / "keras" / "notes.txt").write_text("not a model")
    assert find_model(tmp_path / "keras").kind == "keras"
    versions = tmp_path / "versions"
    for number in ("1", "9", "10"):
        touch_saved_model(versions / number)
    (versions / "11").mkdir()  # no model in it: not a version
    found = find_model(versions)
    assert (found.path.name, found.version) == ("10", "10")
    assert TFModel.can_load(versions) and TFModel.can_load(plain)
    assert not TFModel.can_load(tmp_path)


@pytest.mark.parametrize("layout,message", [
    ({"README.md": ""}, "no TensorFlow model in {dir}: expected a SavedModel"),
    ({"a.keras": "", "b.h5": ""}, "several models in {dir}: a.keras, b.h5; keep exactly one"),
    ({"saved_model.pb": "", "model.keras": ""},
     "several models in {dir}: a SavedModel (saved_model.pb), model.keras"),
    ({"model.keras": "", "1/saved_model.pb": ""},
     "{dir} holds both a model (model.keras) and version folders (1)"),
])
def test_missing_or_ambiguous_model_stops_the_server(launch, tmp_path, layout, message):
    for name, text in layout.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    server = launch("-m", "tfserver", "--model_name", "m", "--model_dir", str(tmp_path),
                    wait=False)
    assert server.wait_exit(60) == 1
    output = server.output()
    assert message.format(dir=tmp_path) in output
    assert "Traceback" not in output


def test_model_directory_that_does_not_exist(launch, tmp_path):
    server = launch("-m", "tfserver", "--model_dir", str(tmp_path / "nowhere"), wait=False)
    assert server.wait_exit(60) == 1
    assert f"model directory {tmp_path / 'nowhere'} does not exist" in server.output()


def test_saved_model_from_a_newer_tensorflow_stops_the_server(launch, tmp_path):
    import tf_test_models as models

    source = models.save_signatures(tmp_path / "source", seed=0)
    models.future_saved_model(source, tmp_path / "future" / "1")
    server = launch("-m", "tfserver", "--model_name", "m", "--model_dir",
                    str(tmp_path / "future"), wait=False)
    assert server.wait_exit(120) == 1
    output = server.output()
    assert f"could not load the SavedModel in {tmp_path / 'future' / '1'}" in output
    assert "MatMulFromTheFuture" in output
    assert (f"saved with TensorFlow 9.9.9; this server runs {models.tf.__version__}: an image "
            "built with `make build-tfserver FRAMEWORK_VERSION=9.9.9`") in output
    assert "Traceback" not in output
