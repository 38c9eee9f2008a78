"""Decompression bombs: archives and gzip-encoded downloads that would expand to 1 GB from 1 MB
are refused before the gigabyte is written, and DEST stays as it was."""

import io
import resource
import struct
import subprocess
import sys
import tarfile
import time
import zipfile
import zlib

import pytest

from modelstorage import StorageError, download
from modelstorage.atomic import MARKER

MB, GB = 1 << 20, 1 << 30
WRITE_LIMIT = 32 * MB  # no file the refused downloads write may grow past this


# -- bombs, built without compressing a gigabyte --------------------------------------------------
def _flushed(data: bytes) -> bytes:
    """`data` as raw deflate blocks that stand alone (a full flush resets the compressor), so
    that such pieces put end to end are one valid stream."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)


def deflate(parts: list[tuple[bytes, int]]) -> tuple[bytes, int, int]:
    """Raw deflate of each (data, n) as data then n zero bytes: (stream, CRC-32, size). A
    megabyte of zeros is compressed once and repeated."""
    zeros, block = bytes(MB), _flushed(bytes(MB))
    pieces, crc, size = [], 0, 0
    for data, count in parts:
        whole, rest = divmod(count, MB)
        pieces += [_flushed(data)] + [block] * whole + [_flushed(bytes(rest))]
        crc = zlib.crc32(data, crc)
        for _ in range(whole):
            crc = zlib.crc32(zeros, crc)
        crc = zlib.crc32(bytes(rest), crc)
        size += len(data) + count
    pieces.append(zlib.compressobj(9, zlib.DEFLATED, -15).flush())  # the final block
    return b"".join(pieces), crc, size


def gzipped(parts: list[tuple[bytes, int]]) -> bytes:
    stream, crc, size = deflate(parts)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + stream + struct.pack(
        "<II", crc, size & 0xFFFFFFFF)


def tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(tarfile.GNU_FORMAT)


def tar_gz(members: list[tuple[str, int]]) -> bytes:
    """A tar.gz of zero-filled files: headers, data, then the end blocks and record padding."""
    data = sum(512 + size for _, size in members)
    end = 1024 + (-(data + 1024) % tarfile.RECORDSIZE)
    return gzipped([(tar_header(name, size), size) for name, size in members] + [(b"", end)])


def zip_of_zeros(name: str, size: int) -> bytes:
    stream, crc, _ = deflate([(b"", size)])
    fields = (20, 0, 8, 0, 0x21, crc, len(stream), size, len(name), 0)  # 0x21: 1980-01-01
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", *fields) + name.encode()
    central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, *fields, 0, 0, 0, 0, 0) + \
        name.encode()
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central),
                      len(local) + len(stream), 0)
    return local + stream + central + end


@pytest.fixture(scope="session")
def bombs() -> dict[str, bytes]:
    return {"bomb.zip": zip_of_zeros("weights.bin", GB),
            "bomb.tar.gz": tar_gz([("weights.bin", GB)]),
            "many.tar.gz": tar_gz([(f"shard-{i:04d}.bin", MB) for i in range(1024)]),
            "weights.bin": gzipped([(b"", GB)])}


def test_the_bombs_are_what_they_claim(bombs):
    """About 1 MB each, and 1 GB once expanded (checked on their headers, not by expanding)."""
    assert all(len(bomb) < 1.1 * MB for bomb in bombs.values())
    with zipfile.ZipFile(io.BytesIO(bombs["bomb.zip"])) as zipped:
        assert zipped.infolist()[0].file_size == GB
    assert struct.unpack("<I", bombs["weights.bin"][-4:])[0] == GB & 0xFFFFFFFF
    with tarfile.open(fileobj=io.BytesIO(bombs["bomb.tar.gz"])) as tar:
        assert tar.next().size == GB


# -- refusals ------------------------------------------------------------------------------------
def cli_with_write_limit(uri: str, dest, *options: str) -> tuple[subprocess.CompletedProcess, float]:
    """The CLI in a process that cannot grow a file past WRITE_LIMIT: writing the gigabyte
    would fail with "File too large" instead of the limit's message."""
    def limit_writes() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (WRITE_LIMIT, WRITE_LIMIT))

    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "modelstorage", *options, uri, str(dest)],
                         capture_output=True, text=True, timeout=120, preexec_fn=limit_writes)
    return run, time.monotonic() - started


@pytest.mark.parametrize("name,route", [("bomb.zip", "files"), ("bomb.tar.gz", "files"),
                                        ("many.tar.gz", "files"), ("weights.bin", "gzip")])
def test_bombs_are_refused_quickly_and_dest_is_kept(http_server, bombs, tmp_path, name, route):
    url, files = http_server
    files[name] = bombs[name]
    dest = tmp_path / "models"
    dest.mkdir()
    (dest / "old.bin").write_bytes(b"old")
    run, took = cli_with_write_limit(f"{url}/{route}/{name}", dest)
    assert run.returncode == 1, run.stderr
    assert "STORAGE_MAX_EXPANSION_RATIO" in run.stderr and "refusing to unpack" in run.stderr
    assert "Traceback" not in run.stderr and "File too large" not in run.stderr
    assert took < 20, f"refused after {took:.1f}s"
    print(f"{name}: refused in {took:.2f}s")  # the figure for the README (pytest -s)
    assert [p.name for p in dest.iterdir()] == ["old.bin"]  # as it was, nothing left over
    assert [p.name for p in tmp_path.iterdir()] == ["models"]


def test_the_size_limit_and_the_cli_options(http_server, bombs, tmp_path, monkeypatch):
    url, files = http_server
    files["bomb.tar.gz"] = bombs["bomb.tar.gz"]
    run, _ = cli_with_write_limit(f"{url}/files/bomb.tar.gz", tmp_path / "a",
                                  "--max-expansion-ratio", "0", "--max-expanded-bytes", "512M")
    assert run.returncode == 1
    assert "expands to more than 512.0 MB, the limit set by STORAGE_MAX_EXPANDED_BYTES" \
        in run.stderr
    buffer = io.BytesIO()
    # Deflated: the download itself (bounded by the same size) is far under the limit.
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("model.bin", b"m" * 4096)
    files["small.zip"] = buffer.getvalue()
    monkeypatch.setenv("STORAGE_MAX_EXPANDED_BYTES", "4K")
    assert (download(f"{url}/files/small.zip", tmp_path / "b") / "model.bin").stat().st_size \
        == 4096
    monkeypatch.setenv("STORAGE_MAX_EXPANDED_BYTES", "4095")
    with pytest.raises(StorageError, match="small.zip: it expands to more than 4.0 KB"):
        download(f"{url}/files/small.zip", tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_the_ratio_limit_spares_small_archives_and_can_be_raised(http_server, tmp_path,
                                                                 monkeypatch):
    url, files = http_server
    files["sparse.tar.gz"] = tar_gz([("embeddings.bin", 15 * MB)])  # 15 MB of zeros: ~1000:1
    files["sparser.tar.gz"] = tar_gz([("embeddings.bin", 40 * MB)])
    assert (download(f"{url}/files/sparse.tar.gz", tmp_path / "a") / "embeddings.bin").is_file()
    with pytest.raises(StorageError, match="expands more than 100 times .* to over 40.0 MB"):
        download(f"{url}/files/sparser.tar.gz", tmp_path / "b")
    monkeypatch.setenv("STORAGE_MAX_EXPANSION_RATIO", "2000")
    dest = download(f"{url}/files/sparser.tar.gz", tmp_path / "b")
    assert (dest / "embeddings.bin").stat().st_size == 40 * MB
    assert sorted(p.name for p in dest.iterdir()) == [MARKER, "embeddings.bin"]


@pytest.mark.parametrize("name,value,message", [
    ("STORAGE_MAX_EXPANDED_BYTES", "lots", "must be a size in bytes such as"),
    ("STORAGE_MAX_EXPANSION_RATIO", "-1", "must be a number such as 100"),
    ("STORAGE_MAX_EXPANSION_RATIO", "nan", "must be a number such as 100")])
def test_bad_limit_values_are_named(http_server, tmp_path, monkeypatch, name, value, message):
    url, files = http_server
    files["any.tar.gz"] = tar_gz([("a.bin", 10)])
    monkeypatch.setenv(name, value)
    with pytest.raises(StorageError, match=f"{name} {message}.*{value!r}"):
        download(f"{url}/files/any.tar.gz", tmp_path / "d")
