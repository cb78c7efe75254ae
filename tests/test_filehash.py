"""The file-hash memo (qrecipe/record/filehash.py) gives the digest a fresh read gives, and never
an old digest for a changed file; the atomic writer behind the memo, the cache and the records."""
from __future__ import annotations

import os
import stat
import time

import pytest

from qrecipe.record import filehash
from qrecipe.record.atomic import write_bytes, write_with
from qrecipe.record.fingerprint import _sha256_read, hash_files, sha256_file

BIG = filehash.MIN_BYTES + 1


def _write(path, byte: bytes) -> None:
    path.write_bytes(byte * BIG)


def test_memo_equals_a_fresh_hash_and_is_used(tmp_path):
    f = tmp_path / "model.safetensors"
    _write(f, b"a")
    fresh = _sha256_read(f)
    fresh_fingerprint = hash_files([f])
    with filehash.memo(tmp_path / "memo"):
        assert sha256_file(f) == fresh  # computed, stored
        assert len(list((tmp_path / "memo").rglob("*.json"))) == 1
        calls = []
        assert filehash.digest(f, lambda p: calls.append(p) or "x") == fresh  # from the memo
        assert calls == []
        assert hash_files([f]) == fresh_fingerprint
    assert sha256_file(f) == fresh  # no memo outside the block


def test_changed_content_is_hashed_again_even_with_the_old_mtime(tmp_path):
    f = tmp_path / "w.bin"
    _write(f, b"a")
    with filehash.memo(tmp_path / "memo"):
        old = sha256_file(f)
        st = os.stat(f)
        _write(f, b"b")  # same size, same name
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime set back: ctime still moves
        new = sha256_file(f)
    assert new != old and new == _sha256_read(f)


def test_touched_file_is_hashed_again(tmp_path):
    f = tmp_path / "w.bin"
    _write(f, b"a")
    with filehash.memo(tmp_path / "memo"):
        sha256_file(f)
        st = os.stat(f)
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        calls = []
        assert filehash.digest(f, lambda p: calls.append(p) or "recomputed") == "recomputed"
    assert calls == [f]


def test_small_files_and_a_broken_entry(tmp_path):
    small = tmp_path / "tokenizer.json"
    small.write_text("{}")
    big = tmp_path / "w.bin"
    _write(big, b"c")
    memo = tmp_path / "memo"
    with filehash.memo(memo):
        assert sha256_file(small) == _sha256_read(small)
        sha256_file(big)
        assert len(list(memo.rglob("*.json"))) == 1  # the small file is not memoized
        for entry in memo.rglob("*.json"):
            entry.write_text("not json")
        assert sha256_file(big) == _sha256_read(big)


def test_a_renamed_directory_is_not_hashed_again(tmp_path, monkeypatch):
    """model.partial/ -> model/ keeps every file's inode, size, mtime and ctime: the manifest
    reuses the save stage's digests instead of reading the weights a second time."""
    from qrecipe.record import fingerprint
    d = tmp_path / "model.partial"
    d.mkdir()
    f = d / "model.safetensors"
    _write(f, b"w")
    reads = []
    real = fingerprint._sha256_read
    monkeypatch.setattr(fingerprint, "_sha256_read", lambda p, stop=None: reads.append(p) or
                        real(p, stop))
    with filehash.memo(tmp_path / "memo"):
        first = sha256_file(f)
        d.rename(tmp_path / "model")
        assert sha256_file(tmp_path / "model" / "model.safetensors") == first
        assert len(reads) == 1
        time.sleep(0.05)  # file times tick coarsely (a few ms): a rewrite must be seen as one
        _write(tmp_path / "model" / "model.safetensors", b"v")  # rewritten: read again
        assert sha256_file(tmp_path / "model" / "model.safetensors") == _sha256_read(
            tmp_path / "model" / "model.safetensors") != first
    assert len(reads) == 2
    with filehash.memo(tmp_path / "memo"):  # a new run (empty in-process table): the memo
        assert sha256_file(tmp_path / "model" / "model.safetensors") != first
    assert len(reads) == 2


def test_remember_is_used_only_for_that_exact_file_version(tmp_path):
    f = tmp_path / "w.safetensors"
    _write(f, b"a")
    filehash.remember(f, "not used: no memo active")
    assert sha256_file(f) == _sha256_read(f)
    with filehash.memo(tmp_path / "memo"):
        filehash.remember(f, "recorded")
        assert sha256_file(f) == "recorded"
        st = os.stat(f)
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # another version now
        assert sha256_file(f) == _sha256_read(f)


def test_two_threads_asking_for_one_file_read_it_once(tmp_path, monkeypatch):
    import threading

    from qrecipe.record import fingerprint
    f = tmp_path / "w.bin"
    _write(f, b"t")
    reads = []
    real = fingerprint._sha256_read

    def slow(p, stop=None):
        reads.append(p)
        time.sleep(0.3)
        return real(p, stop)

    monkeypatch.setattr(fingerprint, "_sha256_read", slow)
    got = []
    with filehash.memo(tmp_path / "memo"):
        threads = [threading.Thread(target=lambda: got.append(sha256_file(f))) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert got == [_sha256_read(f)] * 3 and len(reads) == 1


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    """The one atomic writer (qrecipe/record/atomic.py): a writer that fails leaves the old file
    and no temp file; one that succeeds leaves a file others can read (0644, not mkstemp's 0600)."""
    f = tmp_path / "sub" / "entry.json"
    write_bytes(f, b"old")
    assert f.read_bytes() == b"old" and stat.S_IMODE(f.stat().st_mode) == 0o644

    def fail(fh):
        fh.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_with(f, fail)
    assert f.read_bytes() == b"old" and [p.name for p in f.parent.iterdir()] == ["entry.json"]
    write_with(f, lambda fh: fh.write(b"new"))
    assert f.read_bytes() == b"new"
