"""File hashing off the critical path (qrecipe/record/fingerprint.py): parallel hashing gives the digests
a plain sequential read gives, a background hash hands back its value or its error, and a
cancelled one stops reading."""
from __future__ import annotations

import hashlib
import threading
import time

import pytest

from qrecipe.record import fingerprint
from qrecipe.record.fingerprint import Background, Cancelled, hash_files, sha256_files


def _old_hash_files(paths):
    """hash_files as it was before files were read in parallel: the digests must not change."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode() + b"\0" + hashlib.sha256(p.read_bytes()).hexdigest().encode()
                 + b"\n")
    return h.hexdigest()


@pytest.fixture
def shards(tmp_path, monkeypatch):
    monkeypatch.setattr(fingerprint, "_PARALLEL_BYTES", 1)  # the threaded path, on small files
    monkeypatch.setattr(fingerprint, "_CHUNK", 1 << 12)
    files = []
    for i in range(5):
        f = tmp_path / f"model-{i:05d}.safetensors"
        f.write_bytes(bytes([i]) * (3000 * (i + 1)) + b"tail")
        files.append(f)
    (tmp_path / "config.json").write_text("{}")
    files.append(tmp_path / "config.json")
    return files


def test_parallel_digests_equal_sequential_ones(shards):
    got = sha256_files(shards)
    assert got == {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in shards}
    assert hash_files(shards) == _old_hash_files(shards)
    assert hash_files(reversed(shards)) == _old_hash_files(shards)  # order-independent
    # a file named twice counts twice in the digest, as it always did
    assert hash_files(shards + shards[:1]) == _old_hash_files(shards + shards[:1])


def test_a_failing_file_fails_the_whole_hash(shards, tmp_path):
    with pytest.raises(FileNotFoundError):
        hash_files(shards + [tmp_path / "missing.bin"])


def test_background_gives_the_value_and_its_timing(shards):
    bg = Background(lambda stop: hash_files(shards, stop), "test-fp")
    assert bg.result() == _old_hash_files(shards)
    assert bg.done() and bg.seconds is not None and bg.waited >= 0


def test_background_failure_surfaces_in_the_caller():
    def fail(stop):
        raise OSError(5, "Input/output error", "model.safetensors")

    bg = Background(fail, "test-fail")
    with pytest.raises(OSError, match="Input/output error"):
        bg.result()
    with pytest.raises(OSError):  # every later caller sees it too
        bg.result()


def test_cancel_stops_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(fingerprint, "_CHUNK", 1 << 10)
    f = tmp_path / "big.bin"
    f.write_bytes(b"x" * (1 << 20))
    started = threading.Event()
    real_read = fingerprint._sha256_read

    def slow_read(path, stop=None):
        started.set()
        while not stop.is_set():  # stands in for a read of many GB
            time.sleep(0.01)
        return real_read(path, stop)

    monkeypatch.setattr(fingerprint, "_sha256_read", slow_read)
    bg = Background(lambda stop: fingerprint.sha256_file(f, stop), "test-cancel")
    assert started.wait(5)
    bg.cancel()
    with pytest.raises(Cancelled):
        bg.result()


def test_parallel_stops_the_other_threads_after_an_error(tmp_path):
    seen = []

    def work(item, stop):
        if item == 0:
            raise ValueError("first")
        for _ in range(500):  # gives up once the error is known
            if stop.is_set():
                raise Cancelled(str(item))
            time.sleep(0.01)
        seen.append(item)

    with pytest.raises(ValueError, match="first"):
        fingerprint.parallel(work, range(4))
    assert seen == []
