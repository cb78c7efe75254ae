"""The file-hash memo (qrecipe/filehash.py) gives the digest a fresh read gives, and never an old
digest for a changed file."""
from __future__ import annotations

import os

from qrecipe import filehash
from qrecipe.fingerprint import _sha256_read, hash_files, sha256_file

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
