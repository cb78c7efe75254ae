"""The streamed canonical rewrite (qrecipe/record/canonical.py) writes exactly the bytes safetensors' own
load_file + save_file writes (what gptqmodel's resumed runs were rewritten with before), hands
the file's true sha256 to the file-hash memo, and leaves a canonical file alone."""
from __future__ import annotations

import json
import shutil
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from qrecipe.record import canonical, filehash
from qrecipe.record.fingerprint import _sha256_read, sha256_file

_NAMES = {torch.float16: "F16", torch.float32: "F32", torch.int32: "I32", torch.bfloat16: "BF16",
          torch.int64: "I64", torch.uint8: "U8", torch.bool: "BOOL"}


def _write_in_order(path, tensors, metadata, order):
    """A valid safetensors file with its tensors in `order` (the way gptqmodel writes them)."""
    header = {"__metadata__": metadata} if metadata is not None else {}
    blobs, off = [], 0
    for k in order:
        t = tensors[k].contiguous().reshape(-1)
        b = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[k] = {"dtype": _NAMES[t.dtype], "shape": list(tensors[k].shape),
                     "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + b"".join(blobs))


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {"model.layers.0.self_attn.q_proj.qweight": torch.randint(0, 99, (64, 32), generator=g,
                                                                     dtype=torch.int32),
            "model.layers.0.self_attn.q_proj.scales": torch.randn(4, 32, generator=g).half(),
            "model.layers.0.self_attn.q_proj.g_idx": torch.arange(64, dtype=torch.int32),
            "lm_head.weight": torch.randn(50, 16, generator=g),
            "model.norm.weight": torch.randn(16, generator=g).bfloat16(),
            "z.i64": torch.arange(7), "b.u8": torch.arange(9, dtype=torch.uint8),
            "c.bool": torch.tensor([True, False, True]), "scalar": torch.tensor(1.5),
            "empty": torch.zeros(0, 3)}


@pytest.mark.parametrize("metadata", [{"format": "pt"}, None, {}])
def test_bytes_equal_safetensors_own_rewrite(tmp_path, metadata, monkeypatch):
    monkeypatch.setattr(canonical, "_CHUNK", 64)  # many blocks per tensor
    t = _tensors()
    src = tmp_path / "src.safetensors"
    _write_in_order(src, t, metadata, list(t))  # registration order: dtypes interleaved
    ref = tmp_path / "ref.safetensors"
    save_file(load_file(str(src)), str(ref), metadata=metadata)
    out = tmp_path / "model"
    out.mkdir()
    shutil.copy(src, out / "model.safetensors")
    with filehash.memo(tmp_path / "memo"):
        canonical.canonicalize(out)
        assert (out / "model.safetensors").read_bytes() == ref.read_bytes()
        assert not list(out.glob(".tmp-*"))
        # the digest computed while copying is the file's true sha256, and is what the runner
        # gets without reading the file again
        assert sha256_file(out / "model.safetensors") == _sha256_read(ref)


def test_without_copy_file_range_the_bytes_are_the_same(tmp_path, monkeypatch):
    import errno
    import os

    def refuse(*a):
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "copy_file_range", refuse, raising=False)
    t = _tensors()
    out = tmp_path / "model"
    out.mkdir()
    _write_in_order(out / "model.safetensors", t, {"format": "pt"}, list(t))
    ref = tmp_path / "ref.safetensors"
    save_file(load_file(str(out / "model.safetensors")), str(ref), metadata={"format": "pt"})
    canonical.canonicalize(out)
    assert (out / "model.safetensors").read_bytes() == ref.read_bytes()


def test_a_canonical_file_is_left_alone(tmp_path):
    t = _tensors()
    out = tmp_path / "model"
    out.mkdir()
    save_file(t, str(out / "model.safetensors"), metadata={"format": "pt"})
    before = (out / "model.safetensors").stat()
    canonical.canonicalize(out)
    after = (out / "model.safetensors").stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_two_shards_and_an_order_only_difference(tmp_path):
    """Two files with the same tensors in different orders end byte-identical (the resumed and
    the uninterrupted run), shards side by side."""
    t = _tensors()
    for name, order in (("a", list(t)), ("b", list(reversed(t)))):
        d = tmp_path / name
        d.mkdir()
        _write_in_order(d / "model-00001-of-00002.safetensors", t, {"format": "pt"}, order)
        _write_in_order(d / "model-00002-of-00002.safetensors", {"x": t["lm_head.weight"]},
                        {"format": "pt"}, ["x"])
        canonical.canonicalize(d)
    for f in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
        loaded = load_file(str(tmp_path / "a" / f))
        assert all(torch.equal(loaded[k], (t if k in t else {"x": t["lm_head.weight"]})[k])
                   for k in loaded)


@pytest.mark.parametrize("hooked", [True, False])
def test_gptqmodel_writes_the_canonical_layout_itself(tmp_path, hooked):
    """gptqmodel 7.6's shard writer, with the adapter's hook, writes the very bytes of the
    canonical rewrite, so canonicalize() only reads the header; without it (another gptqmodel)
    the rewrite still gives those bytes."""
    pytest.importorskip("gptqmodel")
    from gptqmodel.utils.model import TensorSource, streaming_state_dict_to_shards

    from qrecipe.backends.gptqmodel.shards import shard_writes

    t = {k: v for k, v in _tensors().items() if v.dtype != torch.bool}
    sd = {k: TensorSource(k, v.dtype, tuple(v.shape), v) for k, v in t.items()}
    out = tmp_path / "model"
    out.mkdir()
    with shard_writes(hooked):
        streaming_state_dict_to_shards(sd, save_dir=str(out), model_base_name="model",
                                       single_file_name="model.safetensors",
                                       metadata={"format": "pt"}, max_shard_size=None)
    f = out / "model.safetensors"
    ref = tmp_path / "ref.safetensors"
    save_file(load_file(str(f)), str(ref), metadata={"format": "pt"})
    assert (f.read_bytes() == ref.read_bytes()) is hooked
    before = f.stat()
    canonical.canonicalize(out)
    assert f.read_bytes() == ref.read_bytes()
    assert (f.stat().st_ino == before.st_ino) is hooked  # hooked: nothing was rewritten


@pytest.mark.parametrize("canonical", [True, False])
def test_a_resumed_runs_shards_hold_the_uninterrupted_runs_tensors(tmp_path, canonical):
    """Split into several shards, the same tensors registered in two orders (the uninterrupted
    and the resumed run) give the same files: the canonical order is set before gptqmodel
    splits them. Without it the splits differ, which no rewrite of a single file could mend."""
    pytest.importorskip("gptqmodel")
    from gptqmodel.utils.model import TensorSource, streaming_state_dict_to_shards

    from qrecipe.backends.gptqmodel.shards import shard_writes

    t = {k: v for k, v in _tensors().items() if v.dtype != torch.bool}
    files = {}
    for name, order in (("a", list(t)), ("b", list(reversed(t)))):
        out = tmp_path / name
        out.mkdir()
        sd = {k: TensorSource(k, t[k].dtype, tuple(t[k].shape), t[k]) for k in order}
        with shard_writes(canonical):
            streaming_state_dict_to_shards(sd, save_dir=str(out), model_base_name="model",
                                           single_file_name="model.safetensors",
                                           metadata={"format": "pt"}, max_shard_size=2048)
        files[name] = {f.name: f.read_bytes() for f in sorted(out.glob("*.safetensors"))}
    assert len(files["a"]) > 2 and len(files["b"]) > 2
    assert (files["a"] == files["b"]) is canonical


@pytest.mark.parametrize("shard_mb", [None, 1])
def test_shards_are_hashed_while_gptqmodel_writes_them(tmp_path, shard_mb):
    """Each shard's sha256, computed right behind gptqmodel 7.6's writer, is the sha256 of the
    file as written, and the save stage's hashing then takes it from the memo without reading
    the file (a stale file at the path is removed first, never hashed)."""
    pytest.importorskip("gptqmodel")
    import hashlib
    from unittest import mock

    from gptqmodel.utils.model import TensorSource, streaming_state_dict_to_shards

    from qrecipe.backends.gptqmodel.shards import shard_writes
    from qrecipe.record import filehash, fingerprint

    torch.manual_seed(0)
    t = {f"layer{i}.weight": torch.randn(256, 1024) for i in range(8)}  # 8 MiB
    sd = {k: TensorSource(k, v.dtype, tuple(v.shape), v) for k, v in t.items()}
    import time

    from gptqmodel.utils import model as gm
    out = tmp_path / "model"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"stale" * (1 << 20))
    write_tensor = gm._write_tensor_bytes

    def slow(*args, **kwargs):  # the follower gets to read while the shard is being written
        time.sleep(0.05)
        return write_tensor(*args, **kwargs)

    with filehash.memo(tmp_path / "memo"), mock.patch.object(gm, "_write_tensor_bytes", slow):
        with shard_writes(False) as hashes:
            streaming_state_dict_to_shards(
                sd, save_dir=str(out), model_base_name="model",
                single_file_name="model.safetensors", metadata={"format": "pt"},
                max_shard_size=shard_mb << 20 if shard_mb else None)
        files = [h.path for h in hashes.followers]
        assert hashes.wait() == len(files) == (1 if shard_mb is None else 8)
        assert files == sorted(out.glob("model*.safetensors" if shard_mb is None
                                        else "model-*.safetensors"))
        truth = {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
        assert [h.digest for h in hashes.followers] == [truth[f] for f in files]
        if shard_mb is None:  # one 8 MiB shard written over ~0.4 s: read behind the writer
            assert hashes.followers[0].read_while_writing > 0
        with mock.patch.object(fingerprint, "_sha256_read", side_effect=AssertionError):
            assert {f: fingerprint.sha256_file(f) for f in files} == truth  # from the memo


@pytest.mark.parametrize("shard", ["3MB", None])
def test_shards_are_hashed_while_save_pretrained_writes_them(tmp_path, shard):
    """The backends that save through transformers (llm-compressor, hqq, bitsandbytes): each
    shard save_pretrained writes is hashed behind its writer, the digests are the files', a
    stale file is never hashed, and the save stage takes them from the memo without reading."""
    import hashlib
    from unittest import mock

    from transformers import LlamaConfig, LlamaForCausalLM

    from qrecipe.backends import hf_patches
    from qrecipe.record import filehash, fingerprint

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=512, intermediate_size=1024,
                                         num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=4, vocab_size=512))
    out = tmp_path / "model"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"stale" * (1 << 20))
    with filehash.memo(tmp_path / "memo"):
        with hf_patches.hashed_shards() as hashes:
            model.save_pretrained(str(out), **({"max_shard_size": shard} if shard else {}))
        files = [h.path for h in hashes.followers]
        assert hashes.wait() == len(files) > (1 if shard else 0)
        assert sorted(files) == sorted(out.glob("model-*.safetensors" if shard
                                                else "model.safetensors"))
        truth = {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
        assert [h.digest for h in hashes.followers] == [truth[f] for f in files]
        with mock.patch.object(fingerprint, "_sha256_read", side_effect=AssertionError):
            assert {f: fingerprint.sha256_file(f) for f in files} == truth  # from the memo
        took = hf_patches.save_hashed(lambda: model.save_pretrained(str(tmp_path / "again")))
        assert set(took) == {"save", "shard_sha256_wait"} and took["save"] > 0
    # the writer is transformers' own again after the block
    import transformers.modeling_utils as mu
    from safetensors.torch import save_file
    assert mu.safe_save_file is save_file


def test_a_follower_of_a_file_never_written_gives_up(tmp_path):
    with filehash.memo(tmp_path / "memo"):
        fol = filehash.Follower(tmp_path / "never.bin").start()
        assert fol.wait() is None  # the writer failed before creating it: nothing recorded
