# Two commands from a fresh Debian/Ubuntu machine:  make demo  and  make test  (each sets up what it needs).
# TORCH_INDEX_URL selects another PyTorch build, e.g. PyTorch's CUDA wheel index for your CUDA version;
# by default torch==$(TORCH_VERSION) is the CPU build.
PYTHON ?= python3
# .venv: the package with the newest releases its metadata allows (NumPy 2, current spatialdata and zarr v3), as
# pip gives a scverse user; the Python tests, the command line and the benchmarks run here.
VENV ?= .venv
# .venv-r: the Python the R package reaches through Debian's reticulate 1.28, which needs NumPy < 2
# (constraints-reticulate.txt); the R check runs against it.
R_VENV ?= .venv-r
TORCH_VERSION ?= 2.13.0
TORCH_INDEX_URL ?=
# make test runs the Python tests in this many processes (pytest-xdist), each test file in one of them.
TEST_WORKERS ?= 2
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
R_BIN := $(R_VENV)/bin
CONSTRAINTS := constraints.txt
R_CONSTRAINTS := constraints-reticulate.txt
TORCH_INSTALL = install -q torch==$(TORCH_VERSION) $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))

R_CHECK_DIR := build/r-check
SHARED ?= $(abspath ../shared)

.PHONY: setup setup-r setup-r-python demo test test-python test-r accuracy docs bench clean

setup: $(VENV)/.installed

setup-r-python: $(R_VENV)/.installed

setup-r:
	@bash tools/install_r_deps.sh

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	$(PIP) $(TORCH_INSTALL)
	touch $@

# The R extra (rpy2) is added only when R is present, since rpy2 is built against it.
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) $(VENV)/.torch | setup-r
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[dev,workflow,spatialdata$$(command -v R >/dev/null 2>&1 && echo ',r')]"
	touch $@

$(R_BIN)/python:
	$(PYTHON) -m venv $(R_VENV)
	$(R_BIN)/python -m pip install -q --upgrade pip

$(R_VENV)/.torch: | $(R_BIN)/python
	$(R_BIN)/python -m pip $(TORCH_INSTALL)
	touch $@

# What R reaches: the package, and its R extra (rpy2), which R's tests use to run the Python side's mclust as a
# separate process and compare it with R's own (rpy2 is never called from inside R, which would abort it).
$(R_VENV)/.installed: pyproject.toml $(CONSTRAINTS) $(R_CONSTRAINTS) $(R_VENV)/.torch
	$(R_BIN)/python -m pip install -q -c $(R_CONSTRAINTS) -e ".[r]"
	touch $@

demo: setup
	$(BIN)/spatialdomains demo --out demo-output

# The Python tests (.venv) and the R check (.venv-r) run side by side, each on its own environment: on two cores
# that is several minutes shorter than one after the other. Each one's output is printed whole when it ends.
test:
	@echo "make test: the Python tests and the R check run side by side; each prints its output when it ends"
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-python test-r

test-python: setup
	$(BIN)/python -m pytest tests/python -n $(TEST_WORKERS) --dist loadfile --durations=15

# R CMD build + check of the R package against this venv's Python; any ERROR or WARNING fails. The build runs the
# vignette's code (an error in it fails the build); the check does not run it a second time (--ignore-vignettes).
# Skipped with a note when R is absent (the Python side still runs).
test-r: setup-r
	@if ! command -v R >/dev/null 2>&1; then echo "NOTE: R not found; R package check skipped"; exit 0; fi; \
	$(MAKE) --no-print-directory setup-r-python; \
	set -e; rm -rf $(R_CHECK_DIR); mkdir -p $(R_CHECK_DIR); \
	export RETICULATE_PYTHON="$(CURDIR)/$(R_BIN)/python" SPATIALDOMAINS_REQUIRE_PYTHON=1 \
	       SPATIALDOMAINS_SHARED="$(SHARED)" _R_CHECK_FORCE_SUGGESTS_=false; \
	cd $(R_CHECK_DIR); \
	R CMD build "$(CURDIR)"; \
	R CMD check --no-manual --ignore-vignettes spatialdomains_*.tar.gz; \
	cat spatialdomains.Rcheck/tests/testthat.Rout | grep -E "ARI|FAIL|SKIP" || true; \
	test -f spatialdomains.Rcheck/00check.log; \
	if grep -q "WARNING" spatialdomains.Rcheck/00check.log; then echo "R CMD check gave warnings"; exit 1; fi

# Training to accuracy floors on the shared real data (about an hour on 2 cores): the benchmark scripts with
# their floors asserted (mean over three seeds), the accuracy tests, the slow tests, then the R check with the R door's DLPFC run at
# full length (SPATIALDOMAINS_ACCURACY=1). Run it whenever a model or its defaults
# change. Each step prints its figures; any floor missed fails.
accuracy: setup
	$(BIN)/python bench/bench_staig.py --epochs 400 --seeds 0 1 2 --floor 0.48
	$(BIN)/python bench/bench_staig.py --epochs 400 --seeds 0 1 2 --training minibatch --batch-size 1024 --floor 0.45
	$(BIN)/python bench/bench_spotscape.py dlpfc --seeds 0 1 2 --floor 0.43
	$(BIN)/python bench/bench_spami.py sim --seeds 0 1 2 --floor 0.95
	SPATIALDOMAINS_SHARED="$(SHARED)" $(BIN)/python -m pytest tests/python/test_accuracy.py -m accuracy -s -q
	$(BIN)/python -m pytest tests/python -m slow -q
	SPATIALDOMAINS_ACCURACY=1 $(MAKE) test-r

# Regenerates NAMESPACE and man/ from the roxygen comments (needs roxygen2).
docs:
	Rscript -e 'roxygen2::roxygenise()'

bench: setup
	$(BIN)/python bench/bench_staig.py

clean:
	rm -rf $(VENV) $(R_VENV) demo-output .pytest_cache build
