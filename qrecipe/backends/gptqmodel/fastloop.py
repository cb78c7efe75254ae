"""Result-preserving speed-ups of gptqmodel 7.6's GPTQ layer loop on one CUDA GPU.

A torch.profiler timeline of qrecipe's GPTQ (Llama-2-7B shape, H200, docs/benchmarks.md "GPU:
where a GPTQ layer's seconds go") had the GPU busy only 46% of the wall: the loop waits on pageable copies and
on host synchronizations, not on arithmetic. Each patch below changes where or when bytes move
and who waits for whom; every float operation on every value is still the library's own, so
the packed checkpoint is byte-identical (checked on the GPU by benchmarks/gptqmodel_knobs.py's
`digest`, and for the pack and the scale search on CPU by tests/test_gptqmodel_fastloop.py):

- `post_quantize` (models/base.py): a finished layer goes back to CPU RAM through pinned
  buffers (DMA) with one stream sync per layer, instead of a pageable `.to("cpu")` per tensor.
- `pack_gpu` (nn_modules/qlinear/__init__.py): the packer runs in gptqmodel's finalize threads;
  upstream it loops in Python over 32-row groups (~1,100 iterations of a few kernels a layer) on
  the default stream and ends with a device-wide synchronize, which stalls the main thread's
  next layer. Here it packs a whole block per op on a per-thread side stream and waits only
  for that stream. 3-bit and planar layouts keep upstream's code (on the side stream).
- `Quantizer.find_params` (quantization/quantizer.py): the per-block scale search used boolean
  indexing, `torch.any` and a 0-dim device tensor as a fill value, each a host sync (~285 calls
  a layer); the same values come from `torch.where`. MSE search, groupwise and ternary
  quantizers keep upstream's code.
- calibration_data_device (a QuantizeConfig field, set by the adapter): the layer inputs and
  their kwargs stay on the GPU instead of being copied there again for every batch of every
  forward.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from qrecipe.backends.gptqmodel.patches import FAST_LAYER_LOOP
from qrecipe.backends.patching import guarded

_tls = threading.local()  # each finalize thread's own side stream


def _side_stream(dev):
    import torch
    s = getattr(_tls, "stream", None)
    if s is None or s.device != dev:
        s = _tls.stream = torch.cuda.Stream(device=dev)
    return s


def pack_core(weight, scales, scale_zeros, g_idx, bits: int, maxq, pack_dtype, block_in: int):
    """pack_gpu's 2/4/8-bit qweight (qlinear/__init__.py:1520-1543): the same rounding, clamp
    and bit layout (32 input rows -> `bits` words, row-major [bits, 32/bits]), a block per op."""
    import torch
    out_f, in_f = weight.shape
    pf = 32 // bits
    dev = weight.device
    mask = torch.tensor((1 << 32) - 1, dtype=torch.int64, device=dev)
    shifts = torch.arange(pf, dtype=torch.int64, device=dev).view(1, 1, pf, 1) * bits
    q = torch.empty((in_f // 32 * bits, out_f), dtype=pack_dtype, device=dev)
    block_in = max(32, (block_in // 32) * 32)
    for i0 in range(0, in_f, block_in):
        i1 = min(i0 + block_in, in_f)
        gsel = g_idx[i0:i1]
        ib = torch.round((weight[:, i0:i1] + scale_zeros.index_select(0, gsel).T)
                         / scales.index_select(0, gsel).T)
        ib.clamp_(0, maxq)
        ib = ib.to(torch.int32).T.contiguous()
        g32, base = (i1 - i0) // 32, i0 // 32
        packed = (ib.to(torch.int64).view(g32, bits, pf, -1) << shifts).sum(dim=2,
                                                                            dtype=torch.int64)
        q[base * bits:(base + g32) * bits] = (packed & mask).to(pack_dtype).reshape(g32 * bits, -1)
    return q


def pack_zeros(zeros, bits: int, pack_dtype):
    """pack_gpu's 2/4/8-bit qzeros: [groups, out] -> [groups, out / (32/bits)]."""
    import torch
    pf = 32 // bits
    z = zeros.to(dtype=torch.int64)
    if z.shape[1] % pf:
        raise ValueError(f"zeros' second dimension {z.shape[1]} is not a multiple of {pf}")
    shifts = torch.arange(pf, dtype=torch.int64, device=z.device).view(1, 1, pf) * bits
    packed = (z.view(z.shape[0], -1, pf) << shifts).sum(dim=-1, dtype=torch.int64)
    return (packed & ((1 << 32) - 1)).to(dtype=pack_dtype)


def _pack_vectorized(self, linear, scales, zeros, g_idx, block_in, dev, stream):
    """Upstream pack_gpu's body (same buffers, same dtypes) with pack_core/pack_zeros."""
    import torch
    weight = linear.weight.detach().to(device=dev, copy=True)
    out_f, in_f = weight.shape
    if g_idx is None or g_idx.numel() != in_f or in_f % 32:
        raise ValueError("pack_gpu needs g_idx of in_features and in_features % 32 == 0")
    g_idx_cpu = g_idx.to(device="cpu", dtype=torch.long, copy=False)
    self.register_buffer("g_idx", g_idx_cpu.to(dtype=torch.int32))
    scales_g, zeros_g = scales.T.contiguous(), zeros.T.contiguous()
    scale_zeros_g = zeros_g * scales_g  # on the CPU, as upstream computes it
    self.register_buffer("scales", scales_g.to(device="cpu", dtype=torch.float16))
    if linear.bias is not None:
        self.register_buffer("bias", linear.bias.detach().to(device="cpu", dtype=torch.float16))
    else:
        self.bias = None
    qweight = pack_core(weight, scales_g.to(dev), scale_zeros_g.to(dev), g_idx_cpu.to(dev),
                        int(self.bits), self.maxq, self.pack_dtype, block_in)
    qzeros = pack_zeros(zeros_g.to(dev), int(self.bits), self.pack_dtype)
    stream.synchronize()
    self.register_buffer("qweight", qweight.to(device="cpu", dtype=self.pack_dtype))
    self.register_buffer("qzeros", qzeros.to(device="cpu", dtype=self.pack_dtype))


def find_params_syncfree(self, x, weight=False, *, original):
    """Quantizer.find_params for per-channel weights without host syncs; anything else (MSE
    search, groupwise, ternary, activations) goes to `original`."""
    import torch
    cached = self.__dict__.get("_qrecipe_maxq")  # (device or CPU tensor, its int), see configure
    if (cached is None or not weight or not getattr(self, "perchannel", False)
            or float(getattr(self.qcfg, "mse", 0.0) or 0.0) > 0.0
            or self.requires_groupwise_processing() or self.maxq is not cached[0]
            or cached[1] < 0):
        return original(self, x, weight)
    maxq_int = cached[1]
    self.maxq = self.maxq.to(x.device)
    self.__dict__["_qrecipe_maxq"] = (self.maxq, maxq_int)
    shape = x.shape
    x = x.flatten(1)
    zero = torch.zeros(x.shape[0], device=x.device)
    xmin = torch.minimum(x.min(1)[0], zero)
    xmax = torch.maximum(x.max(1)[0], zero)
    if self.qcfg.sym:
        xmax = torch.maximum(torch.abs(xmin), xmax)
        xmin = torch.where(xmin < 0, -xmax, xmin)
    both = (xmin == 0) & (xmax == 0)
    xmin = torch.where(both, torch.full_like(xmin, -1), xmin)
    xmax = torch.where(both, torch.full_like(xmax, 1), xmax)
    self.scale = (xmax - xmin) / self.maxq  # the same 0-dim device divisor as upstream
    if self.qcfg.sym:
        self.zero = torch.full_like(self.scale, (maxq_int + 1) / 2)
    else:
        self.zero = torch.round(-xmin / self.scale)
    s = [-1] + [1] * (len(shape) - 1)
    self.scale = self.scale.reshape(s)
    self.zero = self.zero.reshape(s)


@contextmanager
def fast_layer_loop(on: bool) -> Iterator[bool]:
    """The patches above for the length of one quantize() call; originals restored after.
    Yields whether they are applied (not on another gptqmodel: backends/patching.py)."""
    with guarded(FAST_LAYER_LOOP, _replacements, on=on) as applied:
        yield applied


def _replacements(original):
    return {"BaseQModel.post_quantize": _post_quantize(original["BaseQModel.post_quantize"]),
            "PackableQuantLinear.pack_gpu": _pack_gpu(original["PackableQuantLinear.pack_gpu"]),
            "Quantizer.configure": _configure(original["Quantizer.configure"]),
            "Quantizer.find_params": _find_params(original["Quantizer.find_params"])}


def _post_quantize(post0):
    import torch

    def post_quantize(self, module):
        if (self.quantize_config.activation_mode in {"w4afp8", "w4a_nvfp4"}
                or any(t.is_meta for t in list(module.parameters()) + list(module.buffers()))):
            return post0(self, module)

        sources = set()

        def to_pinned(t):
            if t.device.type != "cuda":
                return t
            sources.add(t.device)
            host = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=True)
            return host.copy_(t, non_blocking=True)  # queued on the source device's stream
        module._apply(to_pinned)
        for dev in sources:  # every copy landed before anything on the CPU reads it
            torch.cuda.current_stream(dev).synchronize()
        return module
    return post_quantize


def _pack_gpu(pack0):
    import torch

    def pack_gpu(self, linear, scales, zeros, g_idx, *, block_in=8192, device=None):
        dev = torch.device(device) if device is not None else torch.device("cuda")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        stream = _side_stream(dev)
        with torch.inference_mode(), torch.cuda.stream(stream):  # upstream's is inference_mode
            if (int(self.bits) in (2, 4, 8) and not self.planar and int(self.pack_dtype_bits) == 32
                    and isinstance(linear, torch.nn.Linear)):
                return _pack_vectorized(self, linear, scales, zeros, g_idx, block_in, dev, stream)
            return pack0(self, linear, scales, zeros, g_idx, block_in=block_in, device=device)
    return pack_gpu


def _configure(configure0):
    def configure(self, *a, **kw):
        out = configure0(self, *a, **kw)
        self.__dict__["_qrecipe_maxq"] = (self.maxq, int(self.maxq))  # a CPU tensor here
        return out
    return configure


def _find_params(find0):
    from gptqmodel.quantization.quantizer import Quantizer

    def find_params(self, x, weight=False):
        if type(self) is not Quantizer:  # a subclass may rely on upstream's steps
            return find0(self, x, weight)
        return find_params_syncfree(self, x, weight, original=find0)
    return find_params
