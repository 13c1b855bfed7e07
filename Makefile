# `make run` and `make test` work on a fresh clone: they create .venv with the
# machine's python3 when it is missing and reinstall when pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
# test processes (pytest-xdist): two keep both cores busy while one compiles; 0 runs in one process
TEST_WORKERS ?= 2

.PHONY: run test test-all bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/paracrine run --out runs/default-$$(date +%Y%m%d-%H%M%S)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not slow" -n $(TEST_WORKERS)

test-all: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS)

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/forward.py
	$(VENV)/bin/python benchmarks/run_default.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
