"""Local paths, pvc://, http(s)://, archives, atomicity, the marker and the CLI."""

import io
import json
import logging
import os
import re
import subprocess
import sys
import tarfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from modelstorage import StorageError, download
from modelstorage.atomic import LOCK, MARKER, TEMP
from modelstorage.progress import Progress


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MARKER}


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "src"
    (src / "sub dir").mkdir(parents=True)
    (src / "model.joblib").write_bytes(b"weights")
    (src / "sub dir" / "vocab.txt").write_bytes(b"a\nb\n")
    return src


def test_local_folder_and_file_uri(source, tmp_path):
    assert tree(download(str(source), tmp_path / "a")) == tree(source)
    assert tree(download(f"file://{source}", tmp_path / "b")) == tree(source)
    assert tree(download(f"file:{source}", tmp_path / "b2")) == tree(source)
    single = download(f"file://{source}/model.joblib", tmp_path / "c")
    assert tree(single) == {"model.joblib": b"weights"}


def test_pvc_maps_to_the_mount_root_and_links(source, tmp_path, monkeypatch):
    monkeypatch.setenv("PVC_MOUNT_ROOT", str(source.parent))
    dest = download("pvc://my-claim/src", tmp_path / "d")
    assert tree(dest) == tree(source)
    assert (dest / "sub dir" / "vocab.txt").resolve() == source / "sub dir" / "vocab.txt"


def test_the_model_directory_itself_is_left_alone(source):
    """KServe points a runtime's STORAGE_URI at the folder its initializer filled."""
    before = sorted(source.rglob("*"))
    assert download(str(source), source) == source
    assert download(f"file://{source}/", source) == source
    assert sorted(source.rglob("*")) == before  # no marker, no staging folder


def test_a_destination_inside_the_source_is_refused(source):
    with pytest.raises(StorageError, match="inside the source"):
        download(str(source), source / "copy")
    assert not (source / "copy").exists()


def test_a_destination_that_is_a_file(source, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="is not a folder"):
        download(str(source), tmp_path / "file")


def test_the_model_directory_itself_is_a_no_op(source):
    before = tree(source)
    assert download(str(source), source) == source
    assert download(f"file://{source}/", source) == source
    assert tree(source) == before and not (source / MARKER).exists()


def test_missing_local_path_names_it(tmp_path):
    with pytest.raises(StorageError, match="does not exist"):
        download(str(tmp_path / "nope"), tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_unknown_scheme():
    with pytest.raises(StorageError, match="unsupported scheme 'ftp'"):
        download("ftp://host/model", "/tmp/never")


def test_marker_skips_a_complete_download(source, tmp_path):
    dest = download(str(source), tmp_path / "dest")
    (source / "model.joblib").write_bytes(b"changed")
    assert tree(download(str(source), dest))["model.joblib"] == b"weights"  # skipped
    (dest / "model.joblib").write_bytes(b"x")  # no longer complete: fetched again
    assert tree(download(str(source), dest))["model.joblib"] == b"changed"


def test_a_new_uri_replaces_the_old_contents(source, tmp_path):
    dest = download(str(source), tmp_path / "dest")
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.pkl").write_bytes(b"new")
    assert tree(download(str(other), dest)) == {"model.pkl": b"new"}


def test_http_file_redirect_and_auth_header(http_server, tmp_path, monkeypatch):
    url, files = http_server
    files["model.joblib"] = b"x" * 1000
    assert tree(download(f"{url}/files/model.joblib", tmp_path / "a")) == {
        "model.joblib": b"x" * 1000}
    assert tree(download(f"{url}/redirect/model.joblib", tmp_path / "b")) == {
        "model.joblib": b"x" * 1000}
    with pytest.raises(StorageError, match="HTTP 403"):
        download(f"{url}/auth/model.joblib", tmp_path / "c")
    monkeypatch.setenv("STORAGE_HTTP_HEADERS", '{"Authorization": "Bearer secret"}')
    assert tree(download(f"{url}/auth/model.joblib", tmp_path / "c"))


def test_https_redirect_auth_and_kserve_host_headers(https_server, tmp_path, monkeypatch):
    url, files, ca_bundle = https_server
    files["secure.joblib"] = b"s" * 5000
    with pytest.raises(StorageError, match="CERTIFICATE_VERIFY_FAILED"):
        download(f"{url}/files/secure.joblib", tmp_path / "a")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_bundle)
    assert tree(download(f"{url}/redirect/secure.joblib", tmp_path / "b")) == {
        "secure.joblib": b"s" * 5000}
    monkeypatch.setenv("127.0.0.1-headers", json.dumps({"Authorization": "Bearer secret"}))
    assert tree(download(f"{url}/auth/secure.joblib", tmp_path / "c")) == {
        "secure.joblib": b"s" * 5000}


def test_http_errors_permanent_and_transient(http_server, tmp_path, monkeypatch, retries):
    url, files = http_server
    with pytest.raises(StorageError, match=f"^{url}/files/absent: HTTP 404"):
        download(f"{url}/files/absent", tmp_path / "a")
    with pytest.raises(StorageError, match="Invalid URL"):
        download("http://", tmp_path / "a")
    assert not retries
    files["flaky.bin"] = b"ok"  # 503 once, then served
    assert tree(download(f"{url}/flaky/flaky.bin", tmp_path / "b")) == {"flaky.bin": b"ok"}
    assert len(retries) == 1 and "HTTP 503" in retries[0]
    monkeypatch.setenv("STORAGE_HTTP_HEADERS", "not json")
    with pytest.raises(StorageError, match="STORAGE_HTTP_HEADERS must be a JSON object"):
        download(f"{url}/files/flaky.bin", tmp_path / "c")


def test_a_signature_in_the_uri_is_never_shown(http_server, tmp_path, retries):
    """A presigned URL's query is a credential: errors, retry warnings and the marker hide it."""
    url, files = http_server
    signed = "X-Amz-Credential=AKIDEXAMPLE&X-Amz-Signature=0123456789abcdef"
    with pytest.raises(StorageError, match=rf"^{url}/files/absent\?REDACTED: HTTP 404") as error:
        download(f"{url}/files/absent?{signed}", tmp_path / "a")
    files["signed.bin"] = b"s"
    dest = download(f"{url}/flaky/signed.bin?{signed}", tmp_path / "b")  # 503 once: a warning
    seen = [str(error.value), (dest / MARKER).read_text(), *retries]
    assert len(seen) == 3 and not [text for text in seen if "0123456789abcdef" in text]
    assert f"{url}/flaky/signed.bin?REDACTED" in seen[1] and "REDACTED" in seen[2]


def test_dropped_connection_leaves_nothing_behind(http_server, tmp_path, monkeypatch):
    import modelstorage.retry

    monkeypatch.setattr(modelstorage.retry, "FIRST_DELAY", 0.01)
    url, files = http_server
    files["big.bin"] = b"y" * 200_000
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "previous.joblib").write_bytes(b"old")
    with pytest.raises(StorageError,
                       match="big.bin: connection failed.*IncompleteRead.*gave up after 4"):
        download(f"{url}/drop/big.bin", dest)
    assert tree(dest) == {"previous.joblib": b"old"}  # as it was
    assert [p.name for p in tmp_path.iterdir()] == ["dest"]  # no staging folder left


@pytest.mark.parametrize("route", ["files", "unsized"])
def test_a_plain_body_past_the_size_limit_is_refused(http_server, tmp_path, monkeypatch, route):
    """STORAGE_MAX_EXPANDED_BYTES bounds a plain download too, with or without a
    Content-Length."""
    monkeypatch.setenv("STORAGE_MAX_EXPANDED_BYTES", "64K")
    url, files = http_server
    files["huge.bin"] = b"z" * 300_000
    with pytest.raises(StorageError, match="huge.bin: it is larger than 64.0 KB, the limit set "
                                           "by STORAGE_MAX_EXPANDED_BYTES"):
        download(f"{url}/{route}/huge.bin", tmp_path / "dest")
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing left behind
    files["small.bin"] = b"s" * 1000
    download(f"{url}/{route}/small.bin", tmp_path / "dest")
    assert tree(tmp_path / "dest") == {"small.bin": b"s" * 1000}


def test_a_server_that_drips_is_cut_off_at_the_deadline(http_server, tmp_path, monkeypatch):
    """A byte every 0.2 s never trips the read timeout; the whole download's deadline
    (STORAGE_HTTP_DEADLINE_SECONDS) ends it, without retrying."""
    monkeypatch.setenv("STORAGE_HTTP_DEADLINE_SECONDS", "1")
    url, files = http_server
    files["dripping.bin"] = b"d" * 100  # 20 s if nothing cut it short
    started = time.monotonic()
    with pytest.raises(StorageError, match="took longer than 1s, the limit set by "
                                           "STORAGE_HTTP_DEADLINE_SECONDS"):
        download(f"{url}/drip/dripping.bin", tmp_path / "dest")
    assert time.monotonic() - started < 10
    assert [p.name for p in tmp_path.iterdir()] == []


def tar_bytes(members) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def member(name, data=b"", kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data)
    return info, data if kind == tarfile.REGTYPE else None


def zip_bytes(names) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name in names:
            zipped.writestr(name, b"data")
    return buffer.getvalue()


def test_archives_are_unpacked(http_server, tmp_path):
    url, files = http_server
    files["model.tar.gz"] = tar_bytes([member("model/weights.bin", b"w"), member("README", b"r")])
    files["model.zip"] = zip_bytes(["a/b.txt", "c.txt"])
    assert tree(download(f"{url}/files/model.tar.gz", tmp_path / "t")) == {
        "model/weights.bin": b"w", "README": b"r"}
    assert tree(download(f"{url}/files/model.zip", tmp_path / "z")) == {
        "a/b.txt": b"data", "c.txt": b"data"}


HOSTILE = dict([
    ("slip.zip", zip_bytes(["../../evil.txt"])),
    ("abs.zip", zip_bytes(["/etc/evil.txt"])),
    ("dotdot.tar.gz", tar_bytes([member("../evil.txt", b"x")])),
    ("abs.tar.gz", tar_bytes([member("/tmp/evil.txt", b"x")])),
    ("symlink.tar.gz", tar_bytes([member("link", kind=tarfile.SYMTYPE, link="/etc"),
                                  member("link/passwd", b"x")])),
    ("relsymlink.tar.gz", tar_bytes([member("up", kind=tarfile.SYMTYPE, link="../../..")])),
    ("hardlink.tar.gz", tar_bytes([member("hard", kind=tarfile.LNKTYPE, link="/etc/passwd")])),
    ("relhardlink.tar.gz", tar_bytes([member("hard", kind=tarfile.LNKTYPE,
                                             link="../../etc/passwd")])),
    ("device.tar.gz", tar_bytes([member("dev", kind=tarfile.CHRTYPE)])),
])


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_archives_are_refused(http_server, tmp_path, name):
    url, files = http_server
    files[name] = HOSTILE[name]
    dest = tmp_path / "dest"
    with pytest.raises(StorageError, match=f"refusing to unpack {name}: "):
        download(f"{url}/files/{name}", dest)
    assert not dest.exists()
    assert not any(p.name == "evil.txt" for p in tmp_path.parent.rglob("evil.txt"))


@pytest.mark.parametrize("sdk,uri,extra", [
    ("boto3", "s3://b/m", "s3"), ("huggingface_hub", "hf://org/m", "hf"),
    ("mlflow", "models:/m/1", "mlflow"), ("mlflow", "runs:/0123/model", "mlflow"),
    ("azure.identity", "https://a.blob.core.windows.net/c/m", "azure")])
def test_sdk_imported_only_for_its_scheme(tmp_path, sdk, uri, extra):
    """An image without one SDK still serves the other schemes, and says what to install."""
    code = (
        f"import sys; sys.modules[{sdk!r}] = None\n"  # as if not installed
        "import modelstorage\n"
        "sdks = ('boto3', 'botocore', 'google.cloud.storage', 'azure.storage.blob',\n"
        "        'azure.identity', 'huggingface_hub', 'mlflow')\n"
        "assert not [name for name in sdks if sys.modules.get(name)]\n"
        f"modelstorage.download({uri!r}, {str(tmp_path / 'd')!r})\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "AZURE_CLIENT_ID": "an-app"})
    missing = rf"StorageError: {re.escape(uri)}: {sdk}[.\w]* is not installed: pip install " \
        rf"'modelstorage\[{extra}\]'"
    assert re.search(missing, run.stderr), run.stderr


def test_progress_bar_on_a_terminal(capsys):
    progress = Progress("s3://b/m", tty=True)
    progress.expect(2, 2048)
    progress.file_done("a", 1024)
    progress.file_done("b", 1024)
    progress.done()
    assert "[########################] 100% 2/2 files, 2.0 KB of 2.0 KB" in capsys.readouterr().err


def test_cli(source, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "modelstorage", str(source), str(tmp_path / "d")],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "fetched model.joblib" in ok.stderr
    bad = subprocess.run([sys.executable, "-m", "modelstorage", "s3://", str(tmp_path / "e")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "download failed: s3://: no bucket" in bad.stderr
    assert "Traceback" not in bad.stderr
    usage = subprocess.run([sys.executable, "-m", "modelstorage", "--help"],
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0 and "URI" in usage.stdout.upper()


# -- two downloads into one DEST ------------------------------------------------------------------
def wait_for_stage(folder: Path, timeout: float = 20) -> None:
    """Until a download has made its staging folder in `folder` (so the next one overlaps it)."""
    deadline = time.monotonic() + timeout
    while not any(p.name.startswith(TEMP) for p in folder.iterdir()):
        assert time.monotonic() < deadline, "the first download never started"
        time.sleep(0.01)


def test_two_downloads_into_one_dest_take_turns(http_server, tmp_path, retries):
    """The second waits for the first (it used to delete the first's staging folder as left by
    an interrupted download), then finds the model there."""
    url, files = http_server
    files["turns.bin"] = b"t" * 100_000
    uri, dest = f"{url}/slow/turns.bin", tmp_path / "dest"
    messages: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger("modelstorage").addHandler(handler)
    logging.getLogger("modelstorage").setLevel(logging.INFO)
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(download, uri, dest)
            wait_for_stage(tmp_path)
            second = pool.submit(download, uri, dest)
            assert first.result() == second.result() == dest
    finally:
        logging.getLogger("modelstorage").removeHandler(handler)
    assert tree(dest) == {"turns.bin": b"t" * 100_000}
    assert f"waiting for another download into {dest} to finish" in messages
    assert f"{dest} already holds {uri}; not downloading it again" in messages
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]  # no lock, no staging left
    assert sorted(p.name for p in dest.iterdir()) == [MARKER, "turns.bin"]


def test_two_processes_with_different_models_into_one_folder(http_server, tmp_path):
    """Two storage initializers filling one existing folder (a volume) with different models:
    both succeed, one after the other, and the folder holds the second, whole."""
    url, files = http_server
    files["one.bin"], files["two.bin"] = b"1" * 50_000, b"2" * 80_000
    dest = tmp_path / "models"
    dest.mkdir()

    def cli(name: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "modelstorage", f"{url}/slow/{name}",
                                 str(dest)], stderr=subprocess.PIPE, text=True)

    first = cli("one.bin")
    wait_for_stage(dest)
    second = cli("two.bin")
    assert first.wait(60) == 0, first.stderr.read()
    assert second.wait(60) == 0, second.stderr.read()
    assert "waiting for another download" in second.stderr.read()
    assert tree(dest) == {"two.bin": b"2" * 80_000}
    assert json.loads((dest / MARKER).read_text())["uri"] == f"{url}/slow/two.bin"
    assert sorted(p.name for p in dest.iterdir()) == [MARKER, "two.bin"]


def test_a_killed_download_leaves_nothing_that_blocks_the_next(http_server, tmp_path):
    """Its lock dies with it, and the next download removes its staging folder."""
    url, files = http_server
    files["killed.bin"] = b"k" * 100_000
    dest = tmp_path / "models"
    dest.mkdir()
    (dest / "old.bin").write_bytes(b"old")
    killed = subprocess.Popen([sys.executable, "-m", "modelstorage", f"{url}/slow/killed.bin",
                               str(dest)], stderr=subprocess.DEVNULL)
    wait_for_stage(dest)
    killed.kill()
    killed.wait()
    left = {p.name for p in dest.iterdir()} - {"old.bin"}
    assert LOCK in left and any(name.startswith(TEMP) for name in left)
    assert (dest / "old.bin").read_bytes() == b"old"
    download(f"{url}/files/killed.bin", dest)
    assert tree(dest) == {"killed.bin": b"k" * 100_000}
    assert sorted(p.name for p in dest.iterdir()) == [MARKER, "killed.bin"]
