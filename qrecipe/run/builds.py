"""The compiled kernels a CUDA job will call and the kernel cache lacks, built in a child
process beside the job's imports, load and quantizing (qrecipe/kernels/background.py says how
the two processes share a build). Which ones follows from the config: quantizing's (GPTQ via
gptqmodel) and the kernel the reload before evaluation resolves to for the checkpoint the job
writes. Started after validation, collected before the report: metrics.json `kernel_builds`.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

from qrecipe import cuda
from qrecipe.kernels import background
from qrecipe.recipes.schema import HardwareConfig
from qrecipe.run.validate import Plan, checkpoint_sym

log = logging.getLogger("qrecipe")


class Builds:
    """What the job's child builds (None: nothing to build in the background)."""

    def __init__(self, child: Optional[background.Child]):
        self.child = child
        self.result: Optional[Dict[str, Any]] = None

    def finish(self) -> Optional[Dict[str, Any]]:
        """The child's results (stopping it when it still builds what the job no longer
        needs), logged in one line; None when there was no child."""
        if self.child is None or self.result is not None:
            return self.result
        self.result = r = self.child.finish()
        done = ", ".join(f"{k['name']} {k['status']}" + (f" in {k['seconds']} s"
                                                          if k.get("seconds") else "")
                         for k in r["kernels"])
        log.info("kernels: background builds: %s%s", done,
                 " (stopped: the job no longer needed them)" if r["stopped"] else "")
        return r


def _facts(cfg, plan: Plan) -> Dict[str, Any]:
    """What the reload's kernel choice will read from the checkpoint, known from the config."""
    facts: Dict[str, Any] = {"sym": checkpoint_sym(cfg.method), "bits": int(cfg.bits.width),
                             "group_size": int(cfg.bits.group_size)}
    if plan.support.format == "compressed-tensors" and plan.support.layout:
        # activations quantized or float weights: emulated, never rewritten for an int kernel
        facts.update(emulated=True, convertible=False)
    return facts


@contextmanager
def background_builds(cfg, plan: Plan, dtype: str, quantize: bool,
                      root: Path) -> Iterator[Builds]:
    """The job's background builds for the length of the block (root: the kernel cache,
    GPTQMODEL_TORCH_EXTENSIONS_DIR); a child still running when the block ends is stopped."""
    hw = cfg.hardware
    child = None
    on = hw.get("background_builds", HardwareConfig.background_builds)  # a lock may lack it
    if hw.device == "cuda" and hw.get("allow_jit", False) and on:
        jobs = background.needed(plan.support.format, cfg.method.name if quantize else None,
                                 bool(cfg.eval.enabled), True, str(hw.get("kernel", "auto")),
                                 cuda.capability(), _facts(cfg, plan), dtype)
        todo = background.missing(jobs, root)
        if todo:
            log.info("kernels: building %s in the background: not in the kernel cache yet "
                     "(`qrecipe kernels build` prebuilds them once per machine image)",
                     ", ".join(f"{j.ext.name} ({', '.join(j.uses)})" for j in todo))
            child = background.start(todo)
    builds = Builds(child)
    try:
        yield builds
    finally:
        builds.finish()
