"""hqq backend: Half-Quadratic Quantization, calibration-free (adapter.py). The checkpoint is
reloaded by qrecipe/kernels/hqq.py (transformers 5.17 cannot load or make one itself)."""
