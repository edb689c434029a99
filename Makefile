# Two commands from a fresh Debian/Ubuntu machine:  make demo  and  make test  (each sets up what it needs).
# TORCH_INDEX_URL selects another PyTorch build, e.g. PyTorch's CUDA wheel index for your CUDA version;
# by default torch==$(TORCH_VERSION) is the CPU build.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_INDEX_URL ?=
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
CONSTRAINTS := constraints.txt

.PHONY: setup setup-r demo test bench clean

setup: $(VENV)/.installed

setup-r:
	@bash tools/install_r_deps.sh

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	$(PIP) install -q torch==$(TORCH_VERSION) $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	touch $@

# The R extra (rpy2) is added only when R is present, since rpy2 is built against it.
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) $(VENV)/.torch | setup-r
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[dev$$(command -v R >/dev/null 2>&1 && echo ',r')]"
	touch $@

demo: setup
	$(BIN)/spatialdomains demo --out demo-output

test: setup
	$(BIN)/python -m pytest tests/python

bench: setup
	$(BIN)/python bench/bench_staig.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
