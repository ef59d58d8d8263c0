# Every target does its own set-up: a virtual environment in .venv with recvae installed.
# torch is pinned to a CPU build first so that pip never pulls a multi-GB CUDA build on a
# CPU-only box; GPU users override TORCH_SPEC (see README).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.recvae-installed

.PHONY: setup test lint demo bench wheel clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# The wheel users install: the nightly job, its example config and py.typed must be inside.
wheel: $(STAMP)
	rm -rf dist && $(BIN)/python -m pip wheel -q --no-deps --no-build-isolation -w dist .
	$(BIN)/python -c "import sys, zipfile; names = set(zipfile.ZipFile(sys.argv[1]).namelist()); \
	need = {'recvae/nightly.py', 'recvae/cli/nightly.py', 'recvae/nightly_example.toml', \
	'recvae/workflow/publish.py', 'recvae/workflow/fit.py', 'recvae/py.typed'}; \
	sys.exit(f'missing from the wheel: {sorted(need - names)}' if need - names else 0)" dist/*.whl
	@echo "dist/ holds the wheel; it contains the nightly job and its example config"

demo: $(STAMP)
	$(BIN)/recvae demo --workdir demo-run

clean:
	rm -rf $(VENV) demo-run .pytest_cache .ruff_cache
