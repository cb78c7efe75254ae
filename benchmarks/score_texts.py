"""Score saved runs (and the fp model) on more texts, with the runs' own eval protocol.

The defaults sweep (benchmarks/defaults_sweep.sh) judges every candidate default on WikiText-2
(in each run's metrics.json) AND on a text no calibration or tuning read: this script reloads each
run's model/ exactly as the runner does (plain transformers) and scores it on TEXT. Results go to
OUT (JSON) and a markdown table on stdout; run directories are never modified.

    PYTHONPATH=. python3 benchmarks/score_texts.py outputs/bench/defaults --out outputs/bench/heldout.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

from qrecipe.evaluation import perplexity as evaluate
from qrecipe.inputs import models
from qrecipe.inputs import texts as data
from qrecipe.record.cache import Cache
from qrecipe.record.fingerprint import hash_files
from qrecipe.report.runs import find_runs, run_row

TEXT = "pkg://qrecipe/texts/devils_dictionary.txt"


def score(model_dir: Path, dtype: str, text: str, proto, cache: Cache, label: str) -> float:
    tok = models.load_tokenizer(model_dir)
    tok_fp = hash_files(p for p in model_dir.iterdir() if p.name.startswith("tokenizer"))
    spec = data.TextSpec("eval", "local", text, None, "test", "text")
    ids = data.token_ids(spec, tok, tok_fp, cache)
    model = models.load_causal_lm(model_dir, dtype)
    return evaluate.perplexity(model, ids, proto, label)["ppl"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("roots", nargs="+", type=Path)
    ap.add_argument("--text", default=TEXT)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--max-windows", type=int, default=8)
    ap.add_argument("--fp-model", type=Path, help="the unquantized model directory")
    a = ap.parse_args()
    proto = SimpleNamespace(seq_len=a.seq_len, stride=a.seq_len, max_windows=a.max_windows,
                            batch_size=1)
    cache = Cache(Path("~/.cache/qrecipe"))
    done = json.loads(a.out.read_text()) if a.out.is_file() else {}
    if a.fp_model and "fp" not in done:
        done["fp"] = {"ppl": score(a.fp_model, "float32", a.text, proto, cache, "fp")}
    for run in find_runs(a.roots):
        if str(run) in done or not (run / "model").is_dir():
            continue
        row = run_row(run)
        row["heldout_ppl"] = score(run / "model", "auto", a.text, proto, cache, run.name)
        done[str(run)] = row
        a.out.write_text(json.dumps(done, indent=2, default=str))
    a.out.write_text(json.dumps(done, indent=2, default=str))
    print("| run | method | WikiText-2 ppl | held-out ppl | size MB |\n|---|---|---|---|---|")
    for k, r in done.items():
        if k == "fp":
            print(f"| fp32 | - | - | {r['ppl']:.2f} | - |")
            continue
        print(f"| {k} | {r.get('method')} | {r.get('ppl')} | {r['heldout_ppl']:.2f} | "
              f"{r.get('size_mb')} |")


if __name__ == "__main__":
    main()
