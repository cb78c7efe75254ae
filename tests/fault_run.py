"""Run `python -m qrecipe ARGS` with a fault injected, for the kill/resume tests:

    python tests/fault_run.py kill-quantize N ARGS...  SIGKILL on gptqmodel's Nth module
                                                       quantization (a layer may be committed;
                                                       sealed by the callback alone)
    python tests/fault_run.py term-save N ARGS...      SIGTERM while gptqmodel saves (after the
                                                       weights, before its quantize config)
    python tests/fault_run.py crash-eval 0 ARGS...     evaluation raises (a bug), after saving
    python tests/fault_run.py exit-quantize 1 ARGS...  the gptqmodel adapter's quantize calls
                                                       exit(-1), as auto-round does on inputs
                                                       it refuses
"""
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's qrecipe


def _nth(n, action):
    count = [0]

    def hit():
        count[0] += 1
        if count[0] == n:
            action()
    return hit


def main():
    mode, n, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    if mode == "kill-quantize":
        from gptqmodel.looper import gptq_processor
        orig = gptq_processor.GPTQProcessor.process
        hit = _nth(n, lambda: os.kill(os.getpid(), signal.SIGKILL))

        def process(self, *a, **k):
            hit()
            return orig(self, *a, **k)
        gptq_processor.GPTQProcessor.process = process
        # No watcher thread: the seal after each commit must come from the backend's
        # on_checkpoint callback alone, before the next layer (so before the kill).
        from qrecipe.run import stages
        stages.CheckpointSeal._run = lambda self: None
    elif mode == "exit-quantize":  # in the job's thread, where auto-round's exit(-1) runs
        from qrecipe.backends.gptqmodel import adapter
        orig = adapter._quantize
        hit = _nth(n, lambda: sys.exit(-1))

        def _quantize(*a, **k):
            hit()
            return orig(*a, **k)
        adapter._quantize = _quantize
    elif mode == "term-save":
        # gptqmodel's save writes the weights through transformers' save_pretrained, then its
        # own quantize_config.json and logs: SIGTERM lands between the two.
        from transformers import PreTrainedModel
        orig = PreTrainedModel.save_pretrained
        hit = _nth(n, lambda: os.kill(os.getpid(), signal.SIGTERM))

        def save_pretrained(self, *a, **k):
            orig(self, *a, **k)
            hit()
        PreTrainedModel.save_pretrained = save_pretrained
    elif mode == "crash-eval":
        from qrecipe.evaluation import perplexity as evaluate

        def perplexity(*a, **k):
            raise RuntimeError("injected evaluation failure")
        evaluate.perplexity = perplexity
    else:
        raise SystemExit(f"unknown mode {mode}")
    sys.argv = ["qrecipe", *args]
    from qrecipe.cli import main as cli_main
    cli_main()


if __name__ == "__main__":
    main()
