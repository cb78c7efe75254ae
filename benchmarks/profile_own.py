"""qrecipe's own time in one job, from a cProfile of it: the runner's wall time (validate ->
manifest) less the backend library's time (the adapter's quantize() call, less the canonical
rewrite inside it: qrecipe's code) less the imports of torch (set_threads) and transformers
(load_tokenizer, less the tokenizer's own loading). The same formula works on a qrecipe from
before metrics.json had its `overhead` block, so before and after compare like for like. Only
the main thread is profiled: work moved to background threads does not count (it is not waited
for; metrics.json `overhead.hashing_s.input_waited` says whether it was).

    GPTQMODEL_CPU_WORKERS=2 PYTHONPATH=SRC python3 benchmarks/profile_own.py OUT.prof \\
        method=gptq model=local model.path=DIR ...      # one job, profiled
    python3 benchmarks/profile_own.py --report A.prof B.prof ...
"""
from __future__ import annotations

import sys


def profile(out: str, overrides) -> None:
    import cProfile
    import runpy
    sys.argv = ["qrecipe", *overrides]
    pr = cProfile.Profile()
    try:
        pr.runcall(runpy.run_module, "qrecipe", run_name="__main__")
    except SystemExit as e:
        if e.code not in (0, None):
            print(f"qrecipe exited {e.code}", file=sys.stderr)
    finally:
        pr.dump_stats(out)


def own(prof: str) -> dict:
    import pstats
    st = pstats.Stats(prof).stats

    def cum(name, where):
        return sum(v[3] for k, v in st.items() if k[2] == name and where in k[0])

    wall = cum("_run_stages", "qrecipe/run/runner.py")
    canon = cum("canonicalize", "qrecipe/record/canonical.py")
    # + the library's import where the runner made it early, beside the calibration text's
    # tokenizing (qrecipe/inputs/texts.py); run()'s own call then finds it imported (~0 s)
    backend = (cum("run", "backends/gptqmodel/adapter.py") - canon
               + cum("imported", "qrecipe/backends/base.py"))
    torch_import = cum("set_threads", "qrecipe/run/resources.py")
    lt = next(k for k in st if k[2] == "load_tokenizer" and "qrecipe/inputs/models.py" in k[0])
    fp = next(k for k in st if k[2] == "from_pretrained" and "tokenization_auto" in k[0])
    tok_load = st[fp][4].get(lt, (0, 0, 0, 0))[3]
    tf_import = st[lt][3] - tok_load
    return {"wall_s": wall, "backend_s": backend, "torch_import_s": torch_import,
            "transformers_import_s": tf_import,
            "qrecipe_own_s": wall - backend - torch_import - tf_import,
            "of_which": {"canonical_rewrite_s": canon, "tokenizer_load_s": tok_load,
                         "sha256_on_main_thread_s": cum("sha256_file", "qrecipe/record/fingerprint.py"),
                         "tokenizing_s": cum("token_ids", "qrecipe/inputs/texts.py")}}


if __name__ == "__main__":
    if sys.argv[1] == "--report":
        for p in sys.argv[2:]:
            r = own(p)
            imports = r["torch_import_s"] + r["transformers_import_s"]
            print(f"{p}: own {r['qrecipe_own_s']:.2f} s of wall {r['wall_s']:.2f} s (backend "
                  f"{r['backend_s']:.2f}, imports {imports:.2f}) "
                  + ", ".join(f"{k} {v:.2f}" for k, v in r["of_which"].items()))
    else:
        profile(sys.argv[1], sys.argv[2:])
