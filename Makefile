# Build and test the book and revlib.
#   make book   build the HTML book into _build/html (executes the notebooks, cached)
#   make test   unit tests, notebook tests (nbval), a strict book build (-W), then every page
#               opened in headless Chromium (tests/browser_check.py): what CI runs
#   make clean  drop the built book, the execution cache and revlib's cache
SHELL := /bin/bash

# The interpreter used to create .venv; override with e.g. `make PYTHON=python3.11`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Tiny models train ~100x faster with one torch thread than with two on our 2-core
# machines, so every step runs single-threaded.
export OMP_NUM_THREADS := 1
export MKL_NUM_THREADS := 1

.PHONY: venv book test clean

venv: $(VENV)/.installed

# Reinstall whenever the pins or the package metadata change.
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -r requirements.txt
	$(BIN)/pip install -e . --no-deps
	touch $@

book: venv
	$(BIN)/jupyter-book build --all -n --keep-going .
	@echo "Open _build/html/index.html"

test: venv
	$(BIN)/python -m pytest tests/
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env intro.ipynb chapters/ appendix/
	$(BIN)/jupyter-book build --all -W -n --keep-going .
# Every page in headless Chromium: tracebacks, images, links, widgets, math, offline.
# Skipped (exit 0) where Chromium is missing, except under CI=true (.ci/run sets it).
	$(BIN)/python tests/browser_check.py _build/html

# jupyter-cache does not notice edits to revlib/*.py: clean before rebuilding after them.
clean:
	if [ -x $(BIN)/jupyter-book ]; then $(BIN)/jupyter-book clean --all .; else rm -rf _build; fi
	rm -rf .revlib_cache
