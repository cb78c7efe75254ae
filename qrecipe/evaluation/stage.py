"""The runner's evaluate stage: perplexity of the fp baseline (cached) and of the saved
checkpoint reloaded as a user would, with the kernel qrecipe chose, plus speed and task accuracy
when asked. Returns the `eval` block of metrics.json."""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Dict, Optional

from omegaconf import OmegaConf

from qrecipe.evaluation import perplexity as evaluate
from qrecipe.evaluation import tasks
from qrecipe.evaluation.speed import EAGER_SIDE_STEPS
from qrecipe.inputs import models
from qrecipe.inputs import texts as data
from qrecipe.kernels.table import loaded_kernels
from qrecipe.record.cache import Cache
from qrecipe.record.fingerprint import Background, sha256_text

log = logging.getLogger("qrecipe")
# how speed is measured (evaluation/speed.py): part of the fp baseline's cache key, so a cached
# speed is one measured the same way
SPEED_METHOD = f"median-step/eager-side-{EAGER_SIDE_STEPS}"


def tokens_beside(cfg, tokenizer, tok_fp: str, cache: Cache) -> Background:
    """The evaluation text's token ids, computed on a helper thread from now on: the runner
    starts it before the backend quantizes, so the evaluate stage does not open with tokenizing
    (WikiText-2's test split, 1.3 MB: 1.0-1.5 s on a 2-core CPU; the encoder releases the GIL
    while it encodes). `smollm2_rtn_w4 eval.max_windows=4` with an empty cache, 4 runs each on
    that CPU: the evaluate stage outside its two perplexities took 1.7-2.4 s before, 0.9-1.2 s
    after. The thread tokenizes with its own copy of the tokenizer (0.1 s), so the job's own
    stays with the main thread, which saves it beside the checkpoint meanwhile."""
    spec = data.TextSpec.from_cfg("eval", cfg.eval)
    return Background(lambda stop: data.token_ids(spec, copy.deepcopy(tokenizer), tok_fp, cache),
                      "qrecipe-eval-tokens")


def run(cfg, model_dir: Path, model_out: Path, tokenizer, tok_fp: str, model_fp: str,
        dtype: str, cache: Cache, fps: Dict[str, Any], reload_dtype: str = "auto",
        tokens: Optional[Background] = None) -> Dict[str, Any]:
    """`dtype`: what the fp baseline computes in; `reload_dtype`: what the saved checkpoint is
    reloaded in ("auto": its own; the compute dtype where qrecipe/run/dtypes.py changed it);
    `tokens`: tokens_beside's thread where the runner started one."""
    e = cfg.eval
    spec = data.TextSpec.from_cfg("eval", e)
    ids = tokens.result() if tokens is not None else data.token_ids(spec, tokenizer, tok_fp,
                                                                     cache)
    ids_fp = data.rows_fingerprint([ids])
    # a BOS before every window where the tokenizer starts its text with one (Gemma, Llama):
    # the one rule is inputs/texts.py window_bos; recorded in the protocol
    proto = evaluate.protocol(e, spec.describe(), ids_fp, int(ids.numel()),
                              data.window_bos(tokenizer))
    fps["eval_token_ids_sha256"] = ids_fp
    hw = cfg.hardware
    place = dict(device=hw.device, device_map=hw.device_map,
                 max_memory=OmegaConf.to_container(hw.max_memory) if hw.max_memory else None)
    res: Dict[str, Any] = {"protocol": proto}

    if e.baseline:
        res["fp"] = _baseline(cfg, model_dir, ids, proto, model_fp, dtype, cache, place)

    # Reload the saved checkpoint as a user would (plain transformers, the checkpoint's dtype
    # unless this machine computes in another): the number in metrics.json is the number a
    # reloaded model gives.
    q_model = models.load_causal_lm(model_out, reload_dtype, **place,
                                    kernel=hw.get("kernel", "auto"),
                                    allow_jit=bool(hw.get("allow_jit", False)))
    res["kernel"] = {"requested": hw.get("kernel", "auto"), "resolved": q_model.qrecipe_kernel,
                     "loaded_modules": loaded_kernels(q_model), "device": hw.device,
                     "measured": getattr(q_model, "qrecipe_kernel_measured", [])}
    quant = evaluate.perplexity(q_model, ids, e, "quantized", proto["bos_token_id"])
    quant["footprint_bytes"] = evaluate.footprint_bytes(q_model)
    if e.speed:
        quant["speed"] = evaluate.generation_speed(q_model, ids, e.speed_prompt_len,
                                                   e.speed_new_tokens)
    res["quantized"] = quant
    if "fp" in res:
        fp_ppl = res["fp"]["ppl"]
        res["delta_ppl"] = None if quant["ppl"] is None or fp_ppl is None \
            else quant["ppl"] - fp_ppl
    if e.get("tasks"):  # task accuracy through lm-evaluation-harness (qrecipe/evaluation/tasks.py)
        res["tasks"] = tasks.evaluate_tasks(
            e, cfg.seed, q_model, tokenizer, model_fp, dtype, cache,
            lambda: models.load_causal_lm(model_dir, dtype, **place))
    return res


def _baseline(cfg, model_dir: Path, ids, proto, model_fp: str, dtype: str, cache: Cache,
              place: Dict[str, Any]) -> Dict[str, Any]:
    """The fp model's figures, cached. Keyed by what determines the number: weights, protocol
    (incl. token ids), dtype, and the speed settings, so a sweep evaluates the fp model once,
    not once per job."""
    e, hw = cfg.eval, cfg.hardware
    key = sha256_text(OmegaConf.to_yaml(OmegaConf.create({
        "model": model_fp, "protocol": proto, "dtype": dtype, "device": hw.device,
        "speed": [e.speed, e.speed_prompt_len, e.speed_new_tokens, SPEED_METHOD]})))
    base = cache.load_json("baselines", key)
    if base is not None:
        log.info("perplexity (fp): %s from cache", base.get("ppl_problem")
                 or f"{base['ppl']:.4f}")
        return base
    fp_model = models.load_causal_lm(model_dir, dtype, **place)
    base = evaluate.perplexity(fp_model, ids, e, "fp", proto["bos_token_id"])
    base["footprint_bytes"] = evaluate.footprint_bytes(fp_model)
    if e.speed:
        base["speed"] = evaluate.generation_speed(fp_model, ids, e.speed_prompt_len,
                                                  e.speed_new_tokens)
    del fp_model
    cache.save_json("baselines", key, base)
    return base
