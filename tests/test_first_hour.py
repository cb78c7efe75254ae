"""A newcomer's first hour (issue 26, points 3, 4, 5, 6, 8, 9), as the commands a new user types,
on a CPU and offline: GPU recipes validate without a GPU, the shipped model configs plan without
the hub, the hub is refused up front when it is off, the default config is a valid demo, the
first mistakes get one line, dry-run and rejected sweeps have a report, `plan` times are
calibrated to this machine and its recipes ranked, and the small things (help texts, a closed
pipe, completion) hold. Subprocess CLI calls with timeouts; no weights are loaded."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import ROOT, compose, run_cli

RECIPES = sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))
FIX = ROOT / "tests" / "fixtures"
# No GPU, and no hub: any attempt to reach it fails at once instead of waiting on a network.
NO_GPU_NO_NET = {"CUDA_VISIBLE_DEVICES": "", "HF_ENDPOINT": "http://127.0.0.1:9",
                 "HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": "", "HF_DATASETS_OFFLINE": ""}
T = 240  # seconds: each call below takes a few


def cli(args, env=None, cwd=ROOT):
    return run_cli(args, cwd=cwd, env={**NO_GPU_NO_NET, **(env or {})}, timeout=T)


def errors(p):
    return [line for line in p.stderr.splitlines() if line.startswith("error:")]


# --- point 3: a config is checked without its hardware ------------------------------------------

def test_every_shipped_recipe_validates_without_a_gpu_or_the_hub():
    with ThreadPoolExecutor(2) as pool:
        done = dict(zip(RECIPES, pool.map(lambda r: cli(["validate", r]), RECIPES)))
    for name, p in done.items():
        assert p.returncode == 0, f"{name}: {p.stderr[-1500:]}"
        assert p.stdout.startswith(f"valid: {name}: ") and "Traceback" not in p.stderr, name
        assert "note: hardware not checked here" in p.stdout, name
    assert "a visible CUDA device" in done["awq_llama13b"].stdout  # a GPU recipe says what


def test_every_shipped_recipe_passes_a_dry_run_and_the_sweep_has_its_report(tmp_path):
    root = tmp_path / "all"
    p = cli(["-m", f"+recipe={','.join(RECIPES)}", "dry_run=true", f"hydra.sweep.dir={root}"])
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stderr.count("dry run: valid") == len(RECIPES)
    assert "hardware not checked here: a visible CUDA device" in p.stderr
    rows = list(csv.DictReader(open(root / "summary.csv")))
    assert sorted(r["recipe"] for r in rows) == RECIPES
    assert {r["status"] for r in rows} == {"dry run: valid"}
    assert not [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]


def test_a_real_run_on_the_wrong_hardware_still_fails_early_in_one_line(tmp_path):
    p = cli(["+recipe=gptq_llama7b", f"hydra.run.dir={tmp_path}/run"])
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert errors(p) == ["error: hardware.device='cuda': no CUDA device is visible; "
                         "use hardware=cpu on this machine"]


# --- point 4: offline ----------------------------------------------------------------------------

def test_plan_of_a_shipped_model_needs_no_hub():
    for name in ("llama2_7b", "llama2_13b"):
        p = cli(["plan", name, "--json"], env={"HF_HUB_OFFLINE": "1"})
        assert p.returncode == 0, p.stderr
        shipped = json.loads(p.stdout)
        folder = json.loads(cli(["plan", str(FIX / name), "--json"]).stdout)
        # the shipped shape is the model's config.json: the same plan as from the file itself
        assert shipped["rows"] == folder["rows"], name
        assert {k: v for k, v in shipped["model"].items() if k not in ("name", "source")} == \
            {k: v for k, v in folder["model"].items() if k not in ("name", "source")}
    assert shipped["model"]["params"] == 13_015_864_320


def test_a_shipped_shape_stands_for_its_own_model_only():
    from qrecipe.inputs.shapes import shipped_config
    model = compose(["+recipe=gptq_llama7b"]).model
    assert shipped_config(model)["hidden_size"] == 4096
    other = compose(["+recipe=gptq_llama7b", "model.path=org/another-model"]).model
    assert shipped_config(other) is None  # its own config.json is read instead
    assert shipped_config(compose(["+recipe=smollm2_gptq_w4"]).model) is None


@pytest.mark.parametrize("args,line", [
    (["gptq_llama7b"], "model.path='meta-llama/Llama-2-7b-hf': HF_HUB_OFFLINE is set and this "
                       "hub model is not in the local Hugging Face cache"),
    (["smollm2_gptq_w4", "eval=wikitext2"], "eval.path='wikitext': HF_HUB_OFFLINE is set"),
    (["smollm2_gptq_w4", "calibration=c4"], "calibration.path='allenai/c4': HF_HUB_OFFLINE"),
    (["smollm2_gptq_w4", "calibration=pileval"], "calibration.path='mit-han-lab/pile-val-backup'"),
    (["smollm2_gptq_w4", "calibration=hub"], "calibration.path='wikitext'"),
    (["smollm2_gptq_w4", "eval.tasks=[arc_easy]"], "eval.tasks=['arc_easy']: HF_HUB_OFFLINE"),
])
def test_with_the_hub_off_what_needs_it_is_refused_up_front(tmp_path, args, line):
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
           "HF_DATASETS_CACHE": str(tmp_path / "datasets")}
    p = cli(["validate", *args], env=env)
    assert p.returncode == 2 and len(errors(p)) == 1 and line in errors(p)[0], p.stderr
    assert "Traceback" not in p.stderr


def test_the_hub_off_leaves_local_inputs_alone_and_sees_the_cache(tmp_path, monkeypatch):
    p = cli(["validate", "smollm2_gptq_w4", "eval.tasks=[qrecipe_mc]"],
            env={"HF_HUB_OFFLINE": "1"})
    assert p.returncode == 0, p.stderr
    from qrecipe.inputs import offline
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    snap = tmp_path / "models--org--m" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    assert not offline.model_cached("org/m")  # config.json alone: no weights to load
    (snap / "model.safetensors").write_bytes(b"x")
    assert offline.model_cached("org/m")
    (tmp_path / "datasets--allenai--c4" / "snapshots" / "1").mkdir(parents=True)
    assert offline.dataset_cached("allenai/c4") and not offline.dataset_cached("wikitext")


def test_plan_marks_and_ranks_last_the_recipes_that_need_the_hub_for_a_local_model():
    p = cli(["plan", str(FIX / "llama2_7b"), "hardware=a100_80gb", "--json"])
    recipes = json.loads(p.stdout)["recipes"]
    assert [r["rank"] for r in recipes] == list(range(1, len(recipes) + 1))
    as_is = [r for r in recipes if r["fits"] and not r["near_miss"]]
    hub = [bool(r["hub_inputs"]) for r in as_is]
    assert hub == sorted(hub) and any(hub)  # within a fit class, local inputs first
    gptq = next(r for r in recipes if r["recipe"] == "gptq_llama7b")
    assert gptq["hub_inputs"] == ["calibration=hub", "eval=wikitext2"]
    text = cli(["plan", str(FIX / "llama2_7b"), "hardware=a100_80gb"]).stdout
    assert "needs the hub: calibration=hub, eval=wikitext2" in text


# --- point 5: the first things a newcomer types --------------------------------------------------

def test_the_default_config_is_a_valid_demo_and_recipes_keep_their_bits(tmp_path):
    p = cli(["dry_run=true", f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sw"])
    assert p.returncode == 0, p.stderr[-2000:]
    assert "dry run: valid: default: gptq via gptqmodel, w4 g64" in p.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "sw").exists()  # nor a report
    for name in RECIPES:  # no shipped recipe takes its bits from the default
        text = (ROOT / "recipes" / f"{name}.yaml").read_text()
        own = re.search(r"^bits:\n  group_size: (-?\d+)", text, re.M)
        method = compose([f"+recipe={name}"]).method.name
        tuned = ROOT / "conf" / "tuned_method" / "cpu" / f"{method}.yaml"  # tuned=cpu's
        measured = re.search(r"group_size: (-?\d+)", tuned.read_text()) \
            if "override /tuned: cpu" in text else None
        # the recipe's own, else its measured settings', else conf/bits/wN.yaml's g128
        want = int((own or measured).group(1)) if own or measured else 128
        assert compose([f"+recipe={name}"]).bits.group_size == want, name


def test_help_version_and_a_recipe_without_its_plus():
    h = cli(["help"])
    assert h.returncode == 0 and "qrecipe recipes" in h.stdout and "== Config groups" in h.stdout
    h = cli(["help", "show"])
    assert h.returncode == 0 and h.stdout.startswith("usage: qrecipe show")
    for args in (["--version"], ["version"]):
        v = cli(args)
        assert v.returncode == 0 and v.stdout.startswith("qrecipe 0.1.0 (Python ")
        assert "torch " in v.stdout and "hydra-core 1.3" in v.stdout and "Hydra" not in v.stdout
    for args in (["recipe=smollm2_gptq_w4"], ["-m", "recipe=smollm2_gptq_w4,smollm2_nf4"]):
        p = cli(args)
        assert p.returncode == 2 and p.stdout == "" and "Traceback" not in p.stderr
        assert errors(p) == [f"error: {args[-1]}: a recipe is added on top of the defaults: "
                             f"use +{args[-1]}"]


# --- point 6: sweep reports ----------------------------------------------------------------------

def test_the_dry_run_sweep_of_the_docs_writes_its_report(tmp_path):
    """docs/sweeps.md: `python -m qrecipe -m +recipe=bnb_nf4_llama7b bits=w2,w3,w4,w8
    dry_run=true` (a GPU recipe, validated offline on this CPU machine)."""
    assert "python -m qrecipe -m +recipe=bnb_nf4_llama7b bits=w2,w3,w4,w8 dry_run=true" in \
        (ROOT / "docs" / "sweeps.md").read_text()
    root = tmp_path / "docs_sweep"
    p = cli(["-m", "+recipe=bnb_nf4_llama7b", "bits=w2,w3,w4,w8", "dry_run=true",
             f"hydra.sweep.dir={root}"])
    assert p.returncode == 2
    last = p.stderr.strip().splitlines()[-1]
    assert last == f"error: 2 job(s) of the sweep failed; see {root / 'summary.md'}"
    rows = {r["bits"]: r for r in csv.DictReader(open(root / "summary.csv"))}
    for b in ("4", "8"):
        assert rows[b]["status"] == "dry run: valid" and rows[b]["error"] == ""
    for b in ("2", "3"):
        assert rows[b]["status"] == "dry run: rejected"
        assert rows[b]["error"].startswith(f"bits.width={b}: bnb via bitsandbytes does not "
                                           "support")
    assert "dry run: valid" in (root / "summary.md").read_text()


def test_a_dry_run_sweep_run_by_another_launcher_reports_and_fails_alike(tmp_path):
    """submitit (SLURM's local twin): the jobs run in other processes; their rows and the exit
    code still reach the sweep's end."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    root = tmp_path / "submitit"
    p = cli(["-m", "hydra/launcher=local_submitit", "+recipe=bnb_nf4_llama7b", "bits=w2,w4",
             "dry_run=true", f"hydra.sweep.dir={root}"])
    assert p.returncode == 2, p.stderr[-2000:]
    assert p.stderr.strip().splitlines()[-1] == \
        f"error: 1 job(s) of the sweep failed; see {root / 'summary.md'}"
    rows = {r["bits"]: r["status"] for r in csv.DictReader(open(root / "summary.csv"))}
    assert rows == {"2": "dry run: rejected", "4": "dry run: valid"}


def test_a_sweep_whose_every_job_is_rejected_has_its_report(tmp_path):
    root = tmp_path / "rejected"
    p = cli(["-m", "+recipe=smollm2_gptq_w4", "bits.group_size=7,9", f"hydra.sweep.dir={root}"])
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1].endswith(f"see {root / 'summary.md'}")
    rows = list(csv.DictReader(open(root / "summary.csv")))
    assert [r["status"] for r in rows] == ["user_error", "user_error"]
    assert all("does not support this group size" in r["error"] for r in rows)
    # the report can be rebuilt from the sweep folder alone, dry-run rows included
    again = subprocess.run([sys.executable, "-m", "qrecipe.report.runs", str(root), "--no-plots"],
                           cwd=ROOT, capture_output=True, text=True, timeout=T)
    assert again.returncode == 0 and "0/2 complete runs" in again.stdout


# --- point 8: plan times and ranking -------------------------------------------------------------

def test_cpu_times_scale_by_the_probe_or_are_a_range():
    from qrecipe.plan.times import OTHER_MACHINE, estimate_time
    m = {"id": "cpu/gptq/gptqmodel", "method": "gptq", "backend": "gptqmodel", "bits": None,
         "device_class": "cpu", "device": "CPU-X", "shape": {"hidden": 576,
                                                             "intermediate": 1536},
         "calibration": {"num_samples": 32, "seq_len": 512}, "per_layer_s": 4.0,
         "fp16_tflops": None, "probe_gflops": 100.0}
    layer = 576 * 4 * 576 + 3 * 576 * 1536
    known = estimate_time([m], "gptq", "gptqmodel", "cpu", layer, 30, 32, 512, gflops=400.0)
    assert known["seconds"] == pytest.approx(30.0) and known["range"] is None  # 4x faster here
    assert "scaled to this CPU by float32 GEMM GFLOP/s 400/100" in known["source"]
    unknown = estimate_time([{**m, "probe_gflops": None}], "gptq", "gptqmodel", "cpu", layer, 30,
                            32, 512, gflops=400.0)
    assert unknown["seconds"] == pytest.approx(120.0)
    assert unknown["range"] == [120.0 * OTHER_MACHINE[0], 120.0 * OTHER_MACHINE[1]]
    assert "from another machine" in unknown["source"]


def test_the_probe_is_measured_once_per_machine_and_cached(tmp_path):
    from qrecipe.plan import probe
    first = probe.this_machine(tmp_path)
    assert first["gflops"] and first["gflops"] > 0 and not first["cached"]
    assert first["machine"] == probe.machine_key()
    again = probe.this_machine(tmp_path)
    assert again["cached"] and again["gflops"] == first["gflops"]
    assert len(list((tmp_path / probe.KIND).glob("*.json"))) == 1
    p = cli(["plan", "--probe"], env={"QRECIPE_CACHE": str(tmp_path)})
    assert p.returncode == 0 and json.loads(p.stdout)["gflops"] == first["gflops"]


def test_plan_ranks_recipes_and_gives_one_awq_figure():
    p = cli(["plan", "smollm2_135m", "--json"])
    plan = json.loads(p.stdout)
    assert plan["hardware"]["cpu_gemm_gflops"] > 0
    recipes = plan["recipes"]
    fit = [0 if r["fits"] and not r["near_miss"] else 1 if r["fits"] else 2 for r in recipes]
    assert fit == sorted(fit)
    smol = [r for r in recipes if r["recipe"].startswith("smollm2_")]
    assert smol == recipes[:len(smol)]  # the recipes made for this model first ...
    deltas = [r["expected_delta_ppl"] for r in smol]
    promised = [d for d in deltas if d is not None]
    # ... best promised quality first; a recipe that promises nothing after those that do
    assert len(promised) >= 5 and deltas[:len(promised)] == sorted(promised)
    assert all(r["expected_delta_ppl"] is None for r in recipes[len(smol):])
    # AWQ: the recipe's own 8 x 512 tokens on 30 layers at the measured 3.4 s a layer
    # (llm-compressor, docs/benchmarks.md "AWQ by backend"); a range here (the measuring
    # machine's rate is unknown)
    awq = next(r for r in recipes if r["recipe"] == "smollm2_awq_w4")
    assert awq["seconds"] == pytest.approx(102.0, abs=1)
    assert awq["seconds_range"] == [pytest.approx(25.5), pytest.approx(408.0)]
    assert "101.9" in (ROOT / "docs" / "benchmarks.md").read_text()
    text = cli(["plan", "smollm2_135m"]).stdout
    assert re.search(r"^  1\. smollm2_int8 .*: fits; expected Δppl \+0\.73", text, re.M)
    assert "smollm2_awq_w4 (w4 awq/llmcompressor): fits; expected Δppl" in text
    assert "quantize 26 s-7 min" in text
    llama = json.loads(cli(["plan", "llama2_7b", "hardware=h100_80gb", "--json"]).stdout)
    first = [r["recipe"] for r in llama["recipes"][:3]]  # made for it, all fitting as they are
    assert sorted(first) == ["bnb_int8_llama7b", "bnb_nf4_llama7b", "gptq_llama7b"]


def test_gpu_measurements_are_qrecipe_runs_of_the_benchmark():
    from qrecipe.plan.times import load_measurements
    for m in load_measurements():
        assert m["source"]["runner"] == "qrecipe", m["id"]
        if m["device_class"] != "cuda":
            assert "probe_gflops" in m, m["id"]
            continue
        file = m["source"].get("file") or "benchmarks/results/gpu_bench_h100.json"
        bench = json.loads((ROOT / file).read_text())
        row = next(r for r in bench["rows"] if r["method"] == m["method"] and
                   r["backend"] == m["backend"] and r["runner"] == "qrecipe" and
                   r.get("pass") in (None, m["source"]["pass"]))
        layers = bench["shape"].get("layers") or 0
        events = row.get("per_layer")  # older results keep only their mean
        if row.get("per_layer_s") is not None and (events is None or len(events) == layers):
            assert m["per_layer_s"] == row["per_layer_s"], m["id"]  # the library's layer times
        else:  # data-free methods report no time per layer: the quantize stage over the layers
            assert m["per_layer_s"] == round(row["stages_s"]["quantize"] / layers, 3), m["id"]


# --- point 9: help texts, a closed pipe, completion ----------------------------------------------

def _description(command):
    out = cli([command, "--help"]).stdout
    return " ".join(out.split("\n\n")[1].split())  # usage, blank line, the description


@pytest.mark.parametrize("command", ["recipes", "show", "validate", "verify", "reproduce",
                                     "resume", "plan", "version", "kernels"])
def test_command_help_reads_whole(command):
    text = _description(command)
    assert text.endswith((".", ")")), text  # a whole sentence, not a line cut in two


def test_a_closed_pipe_ends_quietly():
    for args in (["show", "smollm2_gptq_w4"], ["recipes"], ["plan", "smollm2_135m"],
                 ["--cfg", "job", "+recipe=smollm2_gptq_w4"]):
        p = subprocess.Popen([sys.executable, "-m", "qrecipe", *args], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, **NO_GPU_NO_NET})
        p.stdout.close()  # the reader is gone before the first line: `| head -0`
        err = p.stderr.read()
        assert p.wait(timeout=T) == 141, (args, err)
        assert "Traceback" not in err and "BrokenPipe" not in err, (args, err)


def test_completion_knows_the_commands_and_is_documented():
    def query(line):
        p = cli(["-sc", "query=bash"], env={"COMP_LINE": line, "COMP_POINT": str(len(line))})
        assert p.returncode == 0, p.stderr
        return p.stdout.split()

    first = query("qrecipe ")
    assert {"recipes", "show", "validate", "plan", "verify", "help", "+recipe="} <= set(first)
    assert "bits=" in first  # Hydra's own answer follows
    assert query("qrecipe sh")[:1] == ["show"]
    assert query("qrecipe show smollm2_g") == ["smollm2_gptq_w4"]
    models = {f.stem for f in (ROOT / "conf" / "model").glob("*.yaml")} - {"local"}
    assert set(query("qrecipe plan ")) == models | {"--sweep"} and "smollm2_135m" in models
    assert query("qrecipe verify ") == []  # bash's own file completion
    assert "+recipe=smollm2_gptq_w4" in query("qrecipe +recipe=smollm2_g")
    doc = (ROOT / "docs" / "recipes.md").read_text()
    assert 'eval "$(qrecipe --shell-completion install=bash)"' in doc
