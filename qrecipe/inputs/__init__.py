"""Load and calibrate: model sources (hub, local folder, GGUF), their shapes and weights checks,
text sources and calibration rows."""
