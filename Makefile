# Two commands: `make serve` and `make test` set everything up themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: all install test lint serve bench clean

all: test

# torch first and pinned: an unpinned `torch` would pull a multi-GB CUDA build here.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -q

serve: $(STAMP)
	$(BIN)/noodlebox serve

bench: $(STAMP)
	$(BIN)/python bench/executor.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
