"""Logs and measurements while a run works: stage timing, per-layer lines, peak memory,
qrecipe's own overhead, and the log formatting."""
