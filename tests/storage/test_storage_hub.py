"""hf:// against the tests' Hub server, through huggingface_hub."""

import gzip
import os
from pathlib import Path

import pytest

import modelstorage.retry
from modelstorage import StorageError, download
from modelstorage.atomic import MARKER

FILES = {
    "config.json": b'{"model_type": "bert"}',
    "model.safetensors": os.urandom(300_000),  # LFS: from the CDN
    "tokenizer/vocab.txt": b"[PAD]\n[UNK]\nhello\n",
    "tokenizer/special/map.json": b"{}",
    "onnx/model.bin": os.urandom(1000),
}


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MARKER}


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(modelstorage.retry, "FIRST_DELAY", 0.01)


def test_hf_whole_repository(hub, tmp_path):
    """Folders, LFS files through the CDN redirect, and a listing of several pages."""
    hub("org/bert", FILES)
    dest = download("hf://org/bert", tmp_path / "d")
    assert tree(dest) == FILES
    assert sorted(p.name for p in dest.iterdir() if p.name.startswith(".")) == [MARKER]


def test_hf_revisions_branch_tag_commit(hub, tmp_path):
    first = hub("org/rev", {"model.bin": b"v1"})
    hub("org/rev", {"model.bin": b"v1"}, branch="v1.0")  # a tag
    second = hub("org/rev", {"model.bin": b"v2", "extra.txt": b"x"}, branch="dev")
    hub("org/rev", {"model.bin": b"v3"})
    assert tree(download("hf://org/rev", tmp_path / "a")) == {"model.bin": b"v3"}
    assert tree(download("hf://org/rev:dev", tmp_path / "b")) == {"model.bin": b"v2",
                                                                   "extra.txt": b"x"}
    assert tree(download("hf://org/rev:v1.0", tmp_path / "c")) == {"model.bin": b"v1"}
    assert tree(download(f"hf://org/rev:{first}", tmp_path / "d")) == {"model.bin": b"v1"}
    assert tree(download(f"hf://org/rev:{second}/extra.txt", tmp_path / "e")) == {
        "extra.txt": b"x"}


def test_hf_a_path_is_a_folder_or_one_file(hub, tmp_path):
    hub("org/paths", FILES)
    assert tree(download("hf://org/paths/tokenizer", tmp_path / "a")) == {
        "vocab.txt": FILES["tokenizer/vocab.txt"], "special/map.json": b"{}"}
    assert tree(download("hf://org/paths:main/tokenizer/special/", tmp_path / "b")) == {
        "map.json": b"{}"}
    assert tree(download("hf://org/paths/model.safetensors", tmp_path / "c")) == {
        "model.safetensors": FILES["model.safetensors"]}
    with pytest.raises(StorageError, match="no files token in org/paths at its default branch"):
        download("hf://org/paths/token", tmp_path / "d")  # a string prefix is no folder
    assert not (tmp_path / "d").exists()


def test_hf_private_and_gated_repositories_need_hf_token(hub, hub_server, tmp_path, monkeypatch,
                                                         retries):
    hub("org/private", FILES, token="hf_secret")
    hub("org/gated", {"model.safetensors": b"g" * 100}, gated=True)
    with pytest.raises(StorageError, match="^hf://org/private: .*Repository Not Found"):
        download("hf://org/private", tmp_path / "a")
    with pytest.raises(StorageError, match="^hf://org/gated: .*gated repo"):
        download("hf://org/gated", tmp_path / "b")
    assert not retries and not any(tmp_path.iterdir())
    cdn_authorizations = hub_server[2]
    cdn_authorizations.clear()
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert tree(download("hf://org/private", tmp_path / "a")) == FILES
    assert tree(download("hf://org/gated", tmp_path / "b")) == {"model.safetensors": b"g" * 100}
    assert cdn_authorizations == ["", "", ""]  # three LFS files; the token never left the Hub


def test_hf_missing_repository_revision_and_bad_uri(hub, tmp_path, retries):
    hub("org/exists", {"a.txt": b"a"})
    with pytest.raises(StorageError, match="^hf://org/nope: .*Repository Not Found"):
        download("hf://org/nope", tmp_path / "a")
    with pytest.raises(StorageError, match="^hf://org/exists:nobranch: Revision Not Found"):
        download("hf://org/exists:nobranch", tmp_path / "b")
    with pytest.raises(StorageError, match=r"expected hf://<org>/<repo>\[:<revision>\]"):
        download("hf://just-a-name", tmp_path / "c")
    assert not retries and not any(tmp_path.iterdir())


def test_hf_transient_errors_are_retried(hub, tmp_path, fast_retries, retries, monkeypatch):
    hub("org/flaky", {"a.txt": b"a"}, flaky=1)
    assert tree(download("hf://org/flaky", tmp_path / "a")) == {"a.txt": b"a"}
    assert len(retries) == 1 and "503" in retries[0]
    retries.clear()
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(StorageError, match="connection failed.*gave up after 4 attempts"):
        download("hf://org/flaky", tmp_path / "b")
    assert len(retries) == 3


def test_hf_files_are_checked_against_the_listing(hub, tmp_path, fast_retries):
    """A file that does not hash to the listed git blob id is fetched again, then refused; a
    body the server chose to gzip may not grow past the listed size."""
    hub("org/corrupt", {"config.json": b"{}", "vocab.txt": b"abc" * 100},
        corrupt={"vocab.txt"})
    with pytest.raises(StorageError, match="vocab.txt: its hash does not match the Hub's"):
        download("hf://org/corrupt", tmp_path / "a")
    hub("org/bomb", {"config.json": b"{}" * 50},
        gzip={"config.json": gzip.compress(bytes(50 << 20), 9)})
    with pytest.raises(StorageError, match="config.json: the Hub sent more than its listed 100"):
        download("hf://org/bomb", tmp_path / "b")
    assert not any(tmp_path.iterdir())


def test_hf_replaces_an_existing_folder_and_keeps_a_complete_one(hub, tmp_path):
    hub("org/swap", {"model.bin": b"new"})
    dest = tmp_path / "models"
    dest.mkdir()
    (dest / "old.bin").write_bytes(b"old")
    assert tree(download("hf://org/swap", dest)) == {"model.bin": b"new"}
    hub("org/swap", {"model.bin": b"newer"})
    assert tree(download("hf://org/swap", dest)) == {"model.bin": b"new"}  # marker: kept
