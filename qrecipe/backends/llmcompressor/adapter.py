"""llm-compressor adapter: GPTQ, AWQ and RTN weight-only integer quantization, and the preset
schemes of schemes.py (FP8, INT8 W8A8, AutoRound, NVFP4, MXFP4).

The result is a compressed-tensors checkpoint ("pack-quantized": int weights packed into int32
plus per-group scales / zero points; "float-quantized" FP8, "int-quantized" W8A8,
"nvfp4-/mxfp4-pack-quantized" FP4) that plain ``AutoModelForCausalLM.from_pretrained`` loads on
CPU (compressed-tensors decompresses the weights and quantizes activations in forward).
"""
from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

from qrecipe.backends import hf_patches
from qrecipe.backends.base import (
    BACKENDS,
    SHARD_BYTES,
    TRANSFORMERS,
    Backend,
    QuantizeRequest,
    QuantizeResult,
)
from qrecipe.backends.capabilities import CAPABILITIES, undivided
from qrecipe.backends.llmcompressor import layerhooks, patches, placement, schemes
from qrecipe.backends.patching import guarded
from qrecipe.errors import QRecipeError
from qrecipe.telemetry import layerlog

# lm_head stays dense: SmolLM-style models tie it to the embedding, and quantizing it breaks
# the tie (two tables saved) for little size gain. Same convention as GPTQ/AWQ checkpoints.
_IGNORE = ["lm_head"]
_ALGORITHM = {"gptq": "GPTQModifier", "awq": "AWQModifier+QuantizationModifier",
              "rtn": "QuantizationModifier", **schemes.ALGORITHM}


@BACKENDS.register("llmcompressor")
class LLMCompressorBackend(Backend):
    name = "llmcompressor"
    requires = (("llmcompressor", "llmcompressor==0.14.0.1"),
                ("compressed_tensors", "compressed-tensors==0.19.0"),
                ("datasets", "datasets==5.2.0"))
    support = CAPABILITIES["llmcompressor"]
    versions = (patches.LLMCOMPRESSOR, patches.COMPRESSED_TENSORS, TRANSFORMERS)
    patch_sets = patches.ALL

    def check_method(self, method: Any) -> None:
        schemes.check(method)  # validate and dry runs: before any import or weight

    def check_model(self, method: Any, info: Any) -> None:
        schemes.check_model(method, info.architecture)

    def reads_rows(self, method: Any) -> bool:
        return self.support_for(method.name).needs_calibration and (
            method.name not in schemes.METHODS or schemes.uses_rows(method))

    def library_import(self) -> None:
        from llmcompressor import oneshot  # noqa: F401 - the library's import, timed
        from transformers import AutoModelForCausalLM  # noqa: F401

    def run(self, req: QuantizeRequest) -> QuantizeResult:
        import torch
        schemes.check(req.method)  # a caller that skipped validate(): before any weight
        job = _Job(req, rows=req.calibration if self.reads_rows(req.method) else None,
                   versions=self.package_versions(),
                   seconds={"import": self.imported()})  # 0 in a sweep's later jobs
        torch.manual_seed(req.seed)  # the algorithms are deterministic; this guards any sampling
        recipe, kwargs = _translate(job)
        model = _load(job)
        _oneshot(job, model, recipe, kwargs)
        _save(job, model)
        return QuantizeResult(format=self.support[req.method.name].format,
                              details=_describe(job, kwargs))


# per-layer lines while it quantizes, from llmcompressor's own events (layerhooks.py)
layerlog.register(LLMCompressorBackend.name, "llmcompressor", layerhooks.install)


@dataclass
class _Job:
    """One quantize() call as it goes: the request, then what each step decided."""
    req: QuantizeRequest
    rows: Optional[List[Any]]  # token id rows (None: RTN and the data-free schemes)
    versions: Dict[str, str]
    seconds: Dict[str, float]  # the libraries' own steps
    qrecipe_seconds: Dict[str, float] = field(default_factory=dict)  # qrecipe's own work
    model_device: str = "cpu"  # where the whole model was loaded (placement.py)
    model_placement: str = ""  # why there
    pin_patched: bool = False
    loss_patched: bool = False
    max_shard_bytes: Optional[int] = None  # the save's shard size (None: llm-compressor's)


def _translate(job: _Job) -> Tuple[List[Any], Dict[str, Any]]:
    """The request in llm-compressor's terms: the modifiers, and oneshot's data arguments
    (none for RTN, so oneshot runs its data-free pipeline)."""
    req, rows = job.req, job.rows
    recipe = _recipe(req, _weight_args(req))
    if rows is None:
        return recipe, {}
    return recipe, dict(placement.activations(req.hardware or {}, _execution_device(),
                                              req.method.name),
                        dataset=_dataset(rows),
                        num_calibration_samples=len(rows),
                        max_seq_length=max(len(r) for r in rows),
                        # rows arrive already sampled with the recipe's seed; reshuffling would
                        # only change the summation order of the Hessians (and the bytes).
                        shuffle_calibration_samples=False,
                        batch_size=schemes.forward_batch(
                            req.method, (req.hardware or {}).get("calib_batch_size", 1),
                            len(rows)))


def _load(job: _Job):
    import torch
    from transformers import AutoModelForCausalLM
    req = job.req
    device, job.model_placement = placement.model_device(
        req.hardware or {}, _execution_device(), req.model_dir, req.dtype, req.method.name,
        lambda: torch.cuda.mem_get_info()[0])
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        str(req.model_dir), dtype=getattr(torch, req.dtype),
        **({"device_map": {"": device}} if device else {}))
    job.model_device = device or "cpu"
    job.seconds["load"] = time.perf_counter() - t0
    model.eval()
    block = schemes.block_widths(req.method)
    if block:  # FP8 block: inputs in groups of 128, whatever bits.group_size says
        _check_group_size(model, block, key="method.scheme", value=req.method.scheme)
    elif req.method.name not in ("fp8", "w8a8"):  # their presets are per channel / tensor
        _check_group_size(model, req.group_size)
    return model


def _oneshot(job: _Job, model, recipe: List[Any], kwargs: Dict[str, Any]) -> None:
    """llm-compressor's oneshot, with the AWQ patches it needs."""
    from llmcompressor import oneshot
    awq = job.req.method.name == "awq"
    t0 = time.perf_counter()
    with _cpu_safe_pinning(awq) as job.pin_patched, \
            _fp32_awq_loss(awq and job.req.dtype == "float16") as job.loss_patched:
        oneshot(model=model, recipe=recipe, **kwargs)
    job.seconds["quantize"] = time.perf_counter() - t0


def _save(job: _Job, model) -> None:
    # save_compressed=True: llm-compressor's wrapped save_pretrained packs the int weights
    # (otherwise it would save fake-quantized dense fp weights at full size).
    job.req.out_dir.mkdir(parents=True, exist_ok=True)
    job.max_shard_bytes = shards = _shard_size(model)
    took = hf_patches.save_hashed(  # each shard hashed as it is written
        lambda: model.save_pretrained(str(job.req.out_dir), save_compressed=True,
                                      **({"max_shard_size": shards} if shards else {})))
    job.seconds["save"] = took.pop("save")
    job.qrecipe_seconds.update(took)


def _shard_size(model) -> Optional[int]:
    """base.SHARD_BYTES where the model's load converted no weights, else None (llm-compressor's
    own 20 GB). The sha256 of a shard is one sequential stream, so one 4.2 GB file left 3.3 s of
    hashing after an H100 AWQ job's write, where 0.5 GiB shards left 0.41 s (docs/benchmarks.md,
    "the 32-layer 7B shape in one run"). Why not always: transformers (5.17) reverses its load-time
    weight conversions shard by shard for a model it counts as offloaded, which fails for a
    many-to-one conversion (fused experts) whose parts land in different shards. A model from
    from_pretrained records them in `_weight_conversions` (Llama, Gemma 3: none); where that is
    missing (another transformers) the one big shard stays."""
    conversions = getattr(model, "_weight_conversions", None)
    return SHARD_BYTES if conversions is not None and len(conversions) == 0 else None


def _execution_device() -> str:
    """llm-compressor picks its execution device itself (the accelerator when there is one),
    whatever req.device says; where the model is loaded is placement.py's choice."""
    import torch
    if torch.accelerator.is_available():
        return torch.accelerator.current_accelerator().type
    return "cpu"


def _describe(job: _Job, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """The scheme as written to config.json (observer and actorder resolved by the library),
    not as requested."""
    req, rows, method, used_device = job.req, job.rows, job.req.method.name, _execution_device()
    saved = json.loads((req.out_dir / "config.json").read_text())["quantization_config"]
    group = next(iter(saved["config_groups"].values()))
    arch = schemes.architecture_of(req.model_dir)
    details: Dict[str, Any] = {
        "library": "llmcompressor",
        "algorithm": schemes.algorithm(req.method, arch) if method in schemes.METHODS
        else _ALGORITHM[method],
        "scheme": {k: group["weights"].get(k) for k in (
            "num_bits", "type", "strategy", "group_size", "symmetric", "actorder", "observer")},
        "activations": None,  # weight-only (WxA16): activations stay in the model dtype
        "ignore": saved.get("ignore", list(_IGNORE)),
        "compression_format": saved.get("format"),
        "execution_device": used_device,
        "dtype": req.dtype,
        "calibration_rows": len(rows) if rows else 0,
        "calibration_seq_len": max(len(r) for r in rows) if rows else 0,
        "versions": job.versions,
        # the libraries' own time (what a script calling them directly spends too)
        "seconds": {k: round(job.seconds[k], 2) for k in ("import", "load", "quantize", "save")},
        "calib_batch_size": kwargs.get("batch_size"),
        "activations_between_layers": kwargs.get("sequential_offload_device", "cpu")
        if rows else None,
        "model_loaded_on": {"device": job.model_device, "why": job.model_placement},
        "max_shard_bytes": job.max_shard_bytes,
        "qrecipe_seconds": {k: round(v, 2) for k, v in job.qrecipe_seconds.items()},
    }
    if method == "gptq":
        details.update(dampening_frac=float(req.method.damp_percent), block_size=128,
                       # llm-compressor's sequential pipeline re-feeds quantized outputs
                       # between decoder layers; inside a layer all Linears share its inputs.
                       true_sequential="per decoder layer")
    if method == "awq":
        details.update(zero_point=bool(req.method.zero_point), duo_scaling=True, n_grid=20,
                       cpu_pin_memory_patch=job.pin_patched, fp32_loss_patch=job.loss_patched)
    if method in schemes.METHODS:
        details.update(schemes.describe(saved, req.method, arch),
                       reload_kernel=schemes.reload_kernel(saved, req.device, req.hardware))
    if used_device != req.device:
        details["note"] = f"llm-compressor ran on {used_device} (it uses any visible accelerator)"
    return details


def _weight_args(req: QuantizeRequest):
    """compressed-tensors QuantizationArgs for int weights of any bits / group size.

    Built explicitly rather than from preset names (W4A16, W8A16 ...): presets only cover 4/8 bits
    and group size 128.
    """
    from compressed_tensors.quantization import QuantizationArgs

    m = req.method
    if m.name in schemes.METHODS and m.name != "autoround":
        return None  # a preset scheme: the library's own QuantizationArgs
    if m.name == "awq":
        symmetric = not bool(m.zero_point)
    else:
        symmetric = bool(m.sym)
    per_channel = req.group_size == -1
    return QuantizationArgs(
        num_bits=int(req.bits), type="int", symmetric=symmetric,
        strategy="channel" if per_channel else "group",
        group_size=None if per_channel else int(req.group_size))


def _check_group_size(model: Any, group_size: int, key: str = "bits.group_size",
                      value: Any = None) -> None:
    """Fail as a user error, before calibrating, where llm-compressor would raise a ValueError
    halfway through (it only checks divisibility when the quantization config is applied)."""
    import torch

    bad = undivided(group_size, (mod.in_features for name, mod in model.named_modules()
                                 if isinstance(mod, torch.nn.Linear)
                                 and name.split(".")[-1] not in _IGNORE))
    if bad:
        if key != "bits.group_size":
            raise QRecipeError(f"this scheme quantizes inputs in groups of {group_size}, which "
                               f"do not divide the layers' input widths {bad}", key=key,
                               value=value, hint="use method.scheme=dynamic")
        raise QRecipeError(f"group size must divide every quantized layer's input width {bad}",
                           key="bits.group_size", value=group_size,
                           hint="pick a divisor (e.g. 64 or 32) or -1 for per-channel scales")


def _recipe(req: QuantizeRequest, weights) -> List[Any]:
    from compressed_tensors.quantization import QuantizationScheme
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    m = req.method
    if m.name in schemes.METHODS:
        return schemes.modifiers(req, _IGNORE, weights)
    groups = {"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}
    if m.name == "gptq":
        # actorder must be passed explicitly: the modifier's default is "static" (act-order on),
        # and None is the honest mapping of desc_act=False. desc_act=True maps to "weight" (the
        # only act-order GPTQ supports in 0.14: columns visited by activation, groups unchanged,
        # so no g_idx in the checkpoint).
        return [GPTQModifier(config_groups=groups, ignore=list(_IGNORE),
                             dampening_frac=float(m.damp_percent),
                             actorder="weight" if m.desc_act else None)]
    quant = QuantizationModifier(config_groups=groups, ignore=list(_IGNORE))
    if m.name == "awq":
        # 0.14 splits AWQ into a smoothing transform followed by plain quantization; the
        # transform reads the scheme the QuantizationModifier attaches to each Linear.
        from llmcompressor.modifiers.transform import AWQModifier
        return [AWQModifier(), quant]
    return [quant]


def _dataset(rows: List[Any]):
    """Token id rows -> a tokenized datasets.Dataset (oneshot then skips its own tokenization)."""
    from datasets import Dataset

    ids = [[int(t) for t in r.tolist()] for r in rows]
    return Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(r) for r in ids]})


@contextlib.contextmanager
def _cpu_safe_pinning(awq: bool) -> Iterator[bool]:
    """Make AWQ run on CPU-only torch.

    AWQModifier._apply_smoothing calls IntermediatesCache.pin_memory unconditionally (nothing
    else calls it), and pin_memory() raises "Cannot access accelerator device when none is
    available" on a CPU-only build; there is no option to turn it off (offload_device only
    moves the cache). Pinning only speeds host->device copies, so with no accelerator it is a
    pure no-op and skipping it changes no result. The patch is applied only for AWQ without an
    accelerator, only for the oneshot call, and always restored. Yields whether it is applied.
    """
    import torch

    if not awq or torch.accelerator.is_available():
        yield False
        return
    with guarded(patches.CPU_PINNING, lambda original: {
            "IntermediatesCache.pin_memory": lambda self, *args, **kwargs: None}) as applied:
        yield applied


class _Float32View(Sequence):
    """A list of tensors read back as float32 where they are float16, one item at a time (no
    second copy of all the calibration outputs at once)."""

    def __init__(self, tensors: List[Any]):
        self._tensors = tensors

    def __len__(self) -> int:
        return len(self._tensors)

    def __getitem__(self, i):
        import torch

        t = self._tensors[i]
        return t.float() if t.dtype == torch.float16 else t


@contextlib.contextmanager
def _fp32_awq_loss(active: bool) -> Iterator[bool]:
    """Make AWQ's scale search work on float16 models: sum its loss in float32.

    llm-compressor 0.14.0.1's AWQModifier._compute_loss
    (llmcompressor/modifiers/transform/awq/base.py:792-794) adds up
    ``F.mse_loss(fp16_batch, int_w_batch, reduction="sum")`` per calibration batch, a scalar in
    the outputs' dtype. In float16 it is inf as soon as one batch's summed squared error passes
    65504 (e.g. 8 rows x 512 tokens x 4096 channels at a mean squared error of 0.004); every grid
    point then scores inf, ``inf < inf`` never picks one (base.py:724) and base.py:730-737 raises
    "No finite loss was found in best scales grid search", whose text blames NaN in the forward
    pass although the forward is finite (base.py:524-535 would have skipped a non-finite one).
    Measured on the random Llama-2-7B-shaped benchmark model (docs/benchmarks.md). Upcasting the
    outputs to float32 for that sum removes the overflow (and the sum's fp16 rounding, so a
    near-tie between grid points may resolve differently); the forward passes and the grid are
    unchanged. Applied for float16 AWQ only (bfloat16 and float32 cannot overflow there), for
    the oneshot call only, and always restored.
    """
    if not active:
        yield False
        return
    with guarded(patches.FP32_AWQ_LOSS, _float32_loss) as applied:
        yield applied


def _float32_loss(original: Dict[str, Any]) -> Dict[str, Any]:
    upstream = original["AWQModifier._compute_loss"]

    def _compute_loss(self, fp16_outputs, int_w_outputs):
        return upstream(self, _Float32View(fp16_outputs), _Float32View(int_w_outputs))
    return {"AWQModifier._compute_loss": _compute_loss}
