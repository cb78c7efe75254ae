#!/usr/bin/env bash
# SmolLM2 (real weights) GPTQ on a GPU with hardware.tensor_core_hessian off and on, scored with
# the papers' WikiText-2 protocol: the quality check behind the 80 GB profiles' setting
# (docs/benchmarks.md, "GPU: tensor-core Hessians on a real checkpoint"). One line per run;
# run dirs in $WORK.
#   benchmarks/smollm2_gpu_hessian.sh PATH/SmolLM2-135M-Instruct.Q4_1.gguf [WORK]
set -u
G=$1
WORK=${2:-/tmp/smollm2_hessian}
run() {  # name, overrides...
  local name=$1; shift
  timeout 600 python3 -m qrecipe +recipe=smollm2_gptq_w4 model.path="$G" hardware=h100_80gb \
    eval=wikitext2_paper_local eval.speed=false hydra.run.dir="$WORK/$name" "$@" \
    > "$WORK/$name.stdout" 2>&1
  python3 - "$WORK/$name" <<'PY'
import json, sys
d = sys.argv[1]
try:
    m = json.load(open(f"{d}/metrics.json"))
    e, q = m["eval"], m["quantize_details"]
    print(f"{d}: ppl {e['quantized']['ppl']:.4f} fp {e['fp']['ppl']:.4f} "
          f"tensor_core_hessian {q.get('tensor_core_hessian')} "
          f"rows {q.get('calibration_rows')}x{q.get('calibration_seq_len')} kernel {m['kernel']['resolved']}")
except Exception as ex:  # noqa: BLE001 - report and go on with the next run
    print(f"{d}: no metrics ({ex})")
PY
}
mkdir -p "$WORK"
big="calibration.num_samples=128 calibration.seq_len=2048"
run off_128x2048 $big hardware.tensor_core_hessian=false
run on_128x2048 $big hardware.tensor_core_hessian=true
run off_32x512 hardware.tensor_core_hessian=false
run on_32x512 hardware.tensor_core_hessian=true
