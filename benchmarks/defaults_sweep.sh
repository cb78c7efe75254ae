#!/usr/bin/env bash
# The smallest sweep that justifies each shipped SmolLM2 4-bit default (docs/benchmarks.md, "4-bit
# settings on two texts"). Each job is scored on WikiText-2 (its metrics.json); then
# benchmarks/score_texts.py scores every saved model again on the held-out Devil's Dictionary:
#   PYTHONPATH=. python3 benchmarks/score_texts.py outputs/bench/defaults \
#       --fp-model ~/.cache/qrecipe/models/<dequantized SmolLM2> --out outputs/bench/heldout.json
# CPU: 2 cores shared, run niced; about 1 hour of CPU in all (AWQ is most of it).
set -u
OUT=${OUT:-outputs/bench/defaults}
Q="nice -n 10 python3 -m qrecipe -m eval.speed=false"
# bnb: 4-bit data type x compute dtype (no calibration, seconds each)
$Q +recipe=smollm2_nf4 method.quant_type=nf4,fp4 method.compute_dtype=bfloat16,float32 \
   hydra.sweep.dir=$OUT/bnb
# RTN: symmetric or not (the baseline, no calibration)
$Q +recipe=smollm2_rtn_w4 method.sym=true,false hydra.sweep.dir=$OUT/rtn
# GPTQ: symmetric or not, at the shipped 32 x 512 calibration; then bf16 weights (checkpoint size)
$Q +recipe=smollm2_gptq_w4 model.dtype=float32 method.sym=false,true hydra.sweep.dir=$OUT/gptq_sym
$Q +recipe=smollm2_gptq_w4 method.sym=false model.dtype=bfloat16 hydra.sweep.dir=$OUT/gptq_bf16
# AWQ: the shipped settings (8 x 512, zero point)
$Q +recipe=smollm2_awq_w4 calibration.num_samples=8 hydra.sweep.dir=$OUT/awq
# Not run yet (docs/benchmarks.md lists them under the same heading):
# GPTQ, asymmetric: act-order instead of group-aware reordering; damping
$Q +recipe=smollm2_gptq_w4 method.sym=false method.desc_act=true hydra.sweep.dir=$OUT/gptq_descact
$Q +recipe=smollm2_gptq_w4 method.sym=false method.damp_percent=0.1 hydra.sweep.dir=$OUT/gptq_damp
# GPTQ, asymmetric: calibration size / length at equal tokens-ish
$Q +recipe=smollm2_gptq_w4 method.sym=false calibration.num_samples=64 hydra.sweep.dir=$OUT/gptq_n64
$Q +recipe=smollm2_gptq_w4 method.sym=false calibration.num_samples=64 calibration.seq_len=256 \
   hydra.sweep.dir=$OUT/gptq_64x256
# AWQ: symmetric (no zero point)
$Q +recipe=smollm2_awq_w4 method.zero_point=false hydra.sweep.dir=$OUT/awq_sym
