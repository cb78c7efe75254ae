"""Typed schema of every config group, registered in Hydra's ConfigStore.

The primary config's schema (`Config`) types every group; the method options, whose fields differ,
name theirs in their defaults list (``- /schema/method@_here_: gptq``). So a typo
(``method.dampp``) or a wrong type (``bits.width=four``) fails at composition, before
anything heavy is imported. Cross-field rules (bits a method supports, group sizes that divide the
model) live in ``validate.py``; this file only says what fields exist and their types.

Nothing here imports torch: ``python -m qrecipe --cfg job`` must stay cheap.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from qrecipe.recipes.hydra_source import register as register_recipe_sources
from qrecipe.recipes.meta import RecipeMeta


@dataclass
class ModelConfig:
    # hub: `path` is a hub id (pinned by `revision`); local: a transformers directory;
    # gguf: a .gguf file, or pkg://PACKAGE/FILE for one shipped inside a Python package.
    source: str = "hub"
    path: str = MISSING
    revision: Optional[str] = None
    # Only for gguf: the tokenizer comes from the GGUF file itself unless this names another.
    tokenizer: Optional[str] = None
    # dtype the unquantized model is loaded in (for the fp baseline and the quantizer's input).
    dtype: str = "float32"
    # Pickle checkpoints (.bin/.pt) can run code when loaded: only with this explicit opt-in.
    allow_pickle: bool = False
    # The model's config.json numbers (model_type, hidden_size, ...), shipped with a hub model's
    # config so that plan and validation read them offline; `of` names the hub id they belong to,
    # and they are used only while `path` is that id (qrecipe/inputs/shapes.py).
    shape: Optional[Dict[str, Any]] = None


@dataclass
class MethodConfig:
    name: str = MISSING
    backend: str = MISSING


@dataclass
class GPTQMethod(MethodConfig):
    name: str = "gptq"
    backend: str = "gptqmodel"
    desc_act: bool = False  # act-order: quantize columns by decreasing activation
    sym: bool = False  # measured (docs/benchmarks.md); conf/method/gptq.yaml says the same
    damp_percent: float = 0.01
    true_sequential: bool = True


@dataclass
class AWQMethod(MethodConfig):
    name: str = "awq"
    backend: str = "llmcompressor"  # conf/method/awq.yaml says why; "auto": the faster one
    zero_point: bool = True


@dataclass
class RTNMethod(MethodConfig):
    name: str = "rtn"
    backend: str = "gptqmodel"
    sym: bool = False


@dataclass
class BnbMethod(MethodConfig):
    name: str = "bnb"
    backend: str = "bitsandbytes"
    quant_type: str = "nf4"  # 4-bit data type: nf4 or fp4 (8-bit is always LLM.int8)
    double_quant: bool = True
    compute_dtype: str = "auto"  # auto: the model's dtype when half, else bfloat16
    int8_threshold: float = 6.0  # LLM.int8 outlier threshold


@dataclass
class HQQMethod(MethodConfig):
    # Half-Quadratic Quantization via hqq (backends/hqq): nbits from bits.width, the group from
    # bits.group_size (-1: one group per output row), no calibration data.
    name: str = "hqq"
    backend: str = "hqq"
    axis: int = 1  # 1: groups along the input features (runs on CPU); 0: hqq's GPU layout
    # dtype of the scales and zeros and of the dequantized weights; auto: the model's dtype
    compute_dtype: str = "auto"


# llm-compressor's weight-and-activation and float schemes (backends/llmcompressor/adapter.py
# maps each to a compressed-tensors preset; the allowed values are checked there, one line).
@dataclass
class FP8Method(MethodConfig):
    name: str = "fp8"
    backend: str = "llmcompressor"
    # dynamic: FP8_DYNAMIC (per-channel weights, per-token dynamic activations, no data);
    # static: FP8 (per-tensor weights and static per-tensor activations, calibrated);
    # block: FP8_BLOCK (128x128 weight blocks, dynamic activations in groups of 128, no data)
    scheme: str = "dynamic"


@dataclass
class W8A8Method(MethodConfig):
    name: str = "w8a8"
    backend: str = "llmcompressor"
    # SmoothQuant's alpha; null: 0.8 (llm-compressor's examples) where its scales fold into the
    # model's norms, none on Gemma 2/3 (whose norms they do not fold into); 0: no SmoothQuant
    smoothing_strength: Optional[float] = None
    damp_percent: float = 0.01  # GPTQ's dampening of the int8 weights
    desc_act: bool = False


@dataclass
class AutoRoundMethod(MethodConfig):
    name: str = "autoround"
    backend: str = "llmcompressor"
    # light / default / best: auto-round's own recipes (iters, samples, seq_len); `iters` wins
    # where set
    preset: str = "default"
    iters: Optional[int] = None
    sym: bool = True
    enable_torch_compile: bool = False  # torch.compile of the tuning loop (GPU runs)


@dataclass
class NVFP4Method(MethodConfig):
    name: str = "nvfp4"
    backend: str = "llmcompressor"
    activations: bool = True  # false: NVFP4A16 (weights only)


@dataclass
class MXFP4Method(MethodConfig):
    name: str = "mxfp4"
    backend: str = "llmcompressor"
    activations: bool = True  # false: MXFP4A16 (weights only)


@dataclass
class BitsConfig:
    width: int = 4
    # Columns that share one scale; -1 means one scale per output channel.
    group_size: int = 128


@dataclass
class CalibrationConfig:
    source: str = "pydoc"  # hub | local | pydoc
    path: Optional[str] = None  # hub dataset id, or local file (txt, jsonl, json, parquet)
    name: Optional[str] = None  # hub dataset config, e.g. wikitext-2-raw-v1
    split: str = "train"
    text_field: str = "text"
    num_samples: int = 128
    seq_len: int = 512
    seed: int = 0
    # false: samples never share tokens (num_samples x seq_len must fit in the text).
    overlap: bool = True
    # Local chat / instruction data: a jsonl whose records hold `messages` (OpenAI format:
    # [{"role": ..., "content": ...}]) is rendered with the tokenizer's chat template.
    messages_field: str = "messages"
    # Several sources in one calibration set: each entry holds the fields above (source, path,
    # ...) and a `weight`; num_samples is split by weight (e.g. 0.7 user chats, 0.3 generic text).
    mix: List[Dict[str, Any]] = field(default_factory=list)


@dataclass
class HardwareConfig:
    device: str = "cpu"  # cpu | cuda
    # How evaluation spreads a model over devices, e.g. auto for models larger than one GPU;
    # max_memory caps each device then ({"0": "22GiB", "cpu": "64GiB"}).
    device_map: Optional[str] = None
    max_memory: Optional[Dict[str, str]] = None
    num_threads: Optional[int] = None  # None: OMP_NUM_THREADS where set, else every core
    dtype: Optional[str] = None  # overrides model.dtype on this hardware (e.g. float16 on GPU)
    # Local parallel sweeps: each job locks `gpus_per_job` GPUs of the pool (null: all visible)
    # and sees only those (CUDA_VISIBLE_DEVICES). See qrecipe/run/gpus.py.
    assign_gpus: bool = True
    gpus_per_job: int = 1
    gpu_pool: Optional[str] = None
    # Inference kernel of the quantized checkpoint at reload (qrecipe/kernels/table.py): auto
    # picks one that needs no download and no nvcc build unless allow_jit; a name picks it.
    kernel: str = "auto"
    allow_jit: bool = False
    # With allow_jit on CUDA: the compiled kernels this job will call and the kernel cache lacks
    # are built in a child process from validation on, beside the imports, the load and
    # quantizing, instead of in line at first use (qrecipe/kernels/background.py). A 32-layer
    # GPTQ job on a fresh H100 took 99 s instead of 127 s (docs/benchmarks.md); with every
    # kernel in the cache (`qrecipe kernels build`, once per machine image) nothing is started.
    background_builds: bool = True
    # Quantization speed (docs/benchmarks.md, GPU path): calibration rows per forward (gptqmodel
    # quantize(batch_size) / llm-compressor oneshot(batch_size)); whether gptqmodel offloads
    # finished layers to disk (its default) or keeps them in RAM; whether AWQ's scale search
    # streams the layer's activations through CPU RAM in chunks (gptqmodel's default: caps GPU
    # memory) or keeps them on the GPU (measured 1.5x faster per layer on an H100), and whether
    # llm-compressor's AWQ keeps the activations between layers in CPU RAM (its default) or on
    # the GPU.
    calib_batch_size: int = 1
    offload_to_disk: bool = True
    stream_activations: bool = True
    # AWQ via llm-compressor on CUDA: load the whole model onto the GPU when its weights take at
    # most half of the free GPU memory, instead of CPU RAM with one layer onloaded at a time
    # (qrecipe/backends/llmcompressor/placement.py: 0.61x the time a layer, the same bytes; on
    # in the 80 GB profiles).
    model_on_gpu: bool = False
    # GPTQ via gptqmodel on CUDA: each Hessian (X^T X) as one tensor-core GEMM of the fp16/bf16
    # activations with float32 output, instead of a float32 copy and a float32 GEMM
    # (qrecipe/backends/gptqmodel/hessian.py; 12-15x faster GEMM, less exact sums; SmolLM2's
    # perplexity within 1% of the float32 path on an H200; on in the 80 GB profiles, docs).
    tensor_core_hessian: bool = False
    # GPTQ via gptqmodel on CUDA: gptqmodel's layer loop without its pageable copies and host
    # syncs, layer inputs kept on the GPU (qrecipe/backends/gptqmodel/fastloop.py): the same
    # checkpoint bytes, ~20% less quantize time on an H200; on in the 80 GB profiles (docs).
    # Applies with one visible GPU and no layer checkpoints (the case measured).
    fast_layer_loop: bool = False
    # What `qrecipe plan` knows of this GPU (a run does not read these): the card's name, the
    # memory its driver reports (nvidia-smi, MiB; the plan sets ~1 GB aside for the CUDA context)
    # and its dense fp16 tensor TFLOP/s from the spec sheet (scales GPU times measured on another
    # card, qrecipe/plan/measurements.json). Unset where the profile is not one GPU (cpu,
    # multi_gpu): the planner does not offer it.
    label: Optional[str] = None
    memory_mib: Optional[int] = None
    fp16_tflops: Optional[float] = None


@dataclass
class EvalConfig:
    enabled: bool = True
    source: str = "local"  # hub | local | pydoc
    path: Optional[str] = None
    name: Optional[str] = None
    split: str = "test"
    text_field: str = "text"
    # Protocol: the text is tokenized whole, cut into windows of seq_len tokens every `stride`
    # tokens, the first `max_windows` are scored (null: all). Recorded verbatim in metrics.json.
    seq_len: int = 512
    stride: int = 512
    max_windows: Optional[int] = 8
    batch_size: int = 1
    baseline: bool = True  # also score the unquantized model (cached across runs)
    speed: bool = True  # prefill / decode tokens per second of the saved model
    speed_prompt_len: int = 128
    speed_new_tokens: int = 32
    # Task accuracy through lm-evaluation-harness (qrecipe/evaluation/tasks.py): lm-eval task
    # names, or qrecipe_mc (the multiple-choice task shipped inside the package, offline).
    # Empty: none.
    tasks: List[str] = field(default_factory=list)
    limit: Optional[float] = None  # items per task (a count, or a fraction below 1); null: all
    num_fewshot: Optional[int] = None  # null: each task's own default
    task_batch_size: int = 8


@dataclass
class CacheConfig:
    # Shared, fingerprint-keyed cache of dequantized models, token ids and fp baselines.
    enabled: bool = True
    dir: str = "${oc.env:QRECIPE_CACHE,${oc.env:HOME,.}/.cache/qrecipe}"


SCHEMA_VERSION = 1


@dataclass
class Config:
    model: ModelConfig = MISSING
    method: Any = MISSING  # one of the Method dataclasses above, chosen by the `method` group
    bits: BitsConfig = MISSING
    calibration: CalibrationConfig = MISSING
    hardware: HardwareConfig = MISSING
    eval: EvalConfig = MISSING
    recipe_name: str = "custom"
    # Which measured per-method settings apply (the `tuned` group): none, or cpu (each method's
    # settings measured on SmolLM2 and checked on Gemma 3, conf/tuned_method/cpu/METHOD.yaml).
    tuned: str = "none"
    cache: CacheConfig = field(default_factory=CacheConfig)
    seed: int = 0
    # Validate and print the plan, then stop: checks a whole sweep before any work.
    dry_run: bool = False
    notes: str = ""
    tags: List[str] = field(default_factory=list)
    # A recipe's description, author, tested versions and promised results (recipe_meta.py).
    meta: RecipeMeta = field(default_factory=RecipeMeta)
    # Bumped when a key is renamed or removed; frozen into recipe.lock.yaml.
    schema_version: int = SCHEMA_VERSION
    # A run directory that holds another result (or an unfinished run of another config) is
    # refused; force=true moves it aside (DIR.replaced-<time>) and runs. Never frozen in a lock.
    force: bool = False
    # A model folder that names or holds Python code (auto_map, *.py) is refused unless this is
    # true: command line only (a recipe that sets it is refused), never frozen in a lock
    # (qrecipe/boundary/modelfolder.py).
    trust_remote_code: bool = False


METHOD_SCHEMAS = {"gptq": GPTQMethod, "awq": AWQMethod, "rtn": RTNMethod, "bnb": BnbMethod,
                  "fp8": FP8Method, "w8a8": W8A8Method, "autoround": AutoRoundMethod,
                  "nvfp4": NVFP4Method, "mxfp4": MXFP4Method, "hqq": HQQMethod}


def register() -> None:
    cs = ConfigStore.instance()
    # The primary schema types every group but `method`, whose fields depend on the option:
    # each method YAML pulls its own schema from schema/method.
    cs.store(name="qrecipe_schema", node=Config)
    for name, node in METHOD_SCHEMAS.items():
        cs.store(group="schema/method", name=name, node=node)
    register_recipe_sources()


def default_cache_dir() -> Path:
    """The cache a run uses when cache.dir is not set (CacheConfig's default: QRECIPE_CACHE,
    else ~/.cache/qrecipe): where what outlives runs is kept (assembled packages, the probe)."""
    return Path(OmegaConf.structured(CacheConfig).dir).expanduser()
