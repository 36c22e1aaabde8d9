# notme-mlx: two commands set everything up: `make quickstart` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: setup quickstart test test-slow bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

quickstart: setup
	$(BIN)/notme quickstart

test: setup
	$(BIN)/python -m pytest -q

# Slow end-to-end tests; the [verify] extra builds llama.cpp's Python binding (minutes, once per machine).
test-slow: setup
	$(BIN)/python -m pip install -q -e '.[dev,verify]'
	$(BIN)/python -m pytest -q -m slow

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
