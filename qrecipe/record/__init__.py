"""What a run records: output files and the manifest, sha256 fingerprints, file hashing,
canonical safetensors and the fingerprint-keyed cache."""
