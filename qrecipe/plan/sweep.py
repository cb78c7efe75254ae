"""The plan of a sweep, before anything is submitted: `qrecipe plan --sweep RECIPE OVERRIDES`.
Each job of the sweep (the composed config the launcher would start) gets the planner's own
figures for its model, method, bits, calibration and hardware (peak memory while quantizing,
host RAM, quantize time from qrecipe/plan/measurements.json); the sweep gets the totals a
cluster user books: jobs, GPU-hours (or CPU-hours), and the wall time with the launcher's
jobs-at-once. Metadata only, never torch.

Times are quantization only: loading the model, evaluation and the launcher's queue come on
top, and a job whose time has no measurement counts as unknown (said, never as zero).
"""
from __future__ import annotations

import heapq
from typing import Any, Dict, List, Optional

from qrecipe.inputs.shapes import ModelShape
from qrecipe.plan.advice import recipe_format
from qrecipe.plan.build import quantize_figures
from qrecipe.plan.hardware import Profile
from qrecipe.plan.render import aligned, duration, gb
from qrecipe.plan.times import load_measurements


def job_figures(cfg, shape: ModelShape, prof: Profile, gflops: Optional[float]
                ) -> Dict[str, Any]:
    """One valid job's figures (cfg: its composed config): the planner's own quantize row for
    its method, backend, format, calibration and device (build.quantize_figures)."""
    method, backend = str(cfg.method.name), str(cfg.method.backend)
    width, group = int(cfg.bits.width), int(cfg.bits.group_size)
    fmt = recipe_format(method, width)
    q = quantize_figures(shape, fmt, method, backend, prof, load_measurements(),
                         int(cfg.calibration.num_samples), int(cfg.calibration.seq_len),
                         group if group > 0 else 128, gflops)
    gpus = int(cfg.hardware.get("gpus_per_job") or 1) if prof.device == "cuda" else 0
    return {"method": method, "backend": backend, "bits": width, "group_size": group,
            "model": shape.name, "layers": shape.layers, "format": fmt, "gpus": gpus,
            **{k: q[k] for k in ("peak_bytes", "host_bytes", "fits", "seconds",
                                 "seconds_range", "time_source")}}


def totals(jobs: List[Dict[str, Any]], slots: int, time_limit_min: Optional[float],
           mem_limit_bytes: Optional[int]) -> Dict[str, Any]:
    """The sweep's sums over its valid jobs; flags on the jobs that break the launcher's
    limits (time_limit_min: its timeout; mem_limit_bytes: host RAM it books per job)."""
    valid = [j for j in jobs if "error" not in j]
    known = [j for j in valid if j["seconds"] is not None]
    for j in valid:
        j["over_time_limit"] = bool(time_limit_min and j["seconds"]
                                    and j["seconds"] > time_limit_min * 60)
        need = j["host_bytes"] if j["gpus"] else j["peak_bytes"]
        j["over_memory_limit"] = bool(mem_limit_bytes and need > mem_limit_bytes)
    gpu_s = sum(j["seconds"] * j["gpus"] for j in known)
    cpu_s = sum(j["seconds"] for j in known if not j["gpus"])
    return {"jobs": len(jobs), "valid": len(valid), "rejected": len(jobs) - len(valid),
            "unknown_time": len(valid) - len(known),
            "gpu_hours": round(gpu_s / 3600, 3), "cpu_job_hours": round(cpu_s / 3600, 3),
            "serial_seconds": round(sum(j["seconds"] for j in known), 1),
            "slots": slots, "wall_seconds": round(_wall([j["seconds"] for j in known], slots), 1),
            "largest_peak_bytes": max((j["peak_bytes"] for j in valid), default=None)}


def _wall(seconds: List[float], slots: int) -> float:
    """Longest job first onto the earliest free slot (what an array with `slots` tasks at
    once does when every job starts as soon as a slot frees)."""
    free = [0.0] * max(slots, 1)
    for s in sorted(seconds, reverse=True):
        heapq.heappush(free, heapq.heappop(free) + s)
    return max(free)


def render(plan: Dict[str, Any]) -> str:
    t, jobs = plan["totals"], plan["jobs"]
    lines = [f"sweep of {plan['recipe']}: {t['jobs']} jobs ({t['valid']} valid, "
             f"{t['rejected']} rejected) on {plan['hardware']}, launcher {plan['launcher']}"]
    head = ["job", "overrides", "peak GB", "host GB", "fits", "quantize time", "GPU-h"]
    body = [[str(i), " ".join(j["overrides"]), *_cells(j)] for i, j in enumerate(jobs)]
    lines += [""] + aligned([head] + body) + [""]
    lines += [f"job {i}: {j['error']}" for i, j in enumerate(jobs) if "error" in j]
    lines += [f"job {i}: {j['time_source']}" for i, j in enumerate(jobs)
              if "error" not in j and j["seconds"] is None]
    over_t = [str(i) for i, j in enumerate(jobs) if j.get("over_time_limit")]
    over_m = [str(i) for i, j in enumerate(jobs) if j.get("over_memory_limit")]
    if over_t:
        lines.append(f"{_jobs(over_t)}: quantizing alone takes longer than the "
                     f"launcher's time limit ({plan['time_limit_min']:g} min: raise "
                     "hydra.launcher.timeout_min)")
    if over_m:
        lines.append(f"{_jobs(over_m)}: need more RAM (host GB, or peak GB on a CPU) "
                     f"than the launcher books per job ({plan['mem_gb']:g} GB: raise "
                     "hydra.launcher.mem_gb)")
    hours = (f"{t['gpu_hours']:.2f} GPU-hours" if t["gpu_hours"] or not t["cpu_job_hours"]
             else f"{t['cpu_job_hours']:.2f} CPU job-hours")
    n = t["unknown_time"]
    unknown = f" ({n} job{'s' if n > 1 else ''} of unknown time not counted)" if n else ""
    lines += [f"total: {hours} of quantization{unknown}; wall {duration(t['wall_seconds'])} "
              f"with {_at_once(t['slots'])} ({duration(t['serial_seconds'])} one after another)",
              "times are quantization only: model load, evaluation and the queue come on top"]
    return "\n".join(lines)


def _jobs(ids: List[str]) -> str:
    return f"job {ids[0]}" if len(ids) == 1 else f"jobs {', '.join(ids)}"


def _at_once(slots: int) -> str:
    return "one job at a time" if slots == 1 else f"{slots} jobs at once"


def _cells(j: Dict[str, Any]) -> List[str]:
    if "error" in j:
        return ["-", "-", "rejected", "-", "-"]
    span = j["seconds_range"]
    time = f"{duration(span[0])}-{duration(span[1])}" if span else duration(j["seconds"])
    gpu_h = f"{j['seconds'] * j['gpus'] / 3600:.2f}" if j["seconds"] and j["gpus"] else "-"
    return [gb(j["peak_bytes"]), gb(j["host_bytes"]), "yes" if j["fits"] else "NO", time,
            gpu_h]
