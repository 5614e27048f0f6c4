# `make run` and `make test` set everything up on a fresh machine (Python 3.11+, pip, make).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU wheel; on a CUDA machine use e.g. `make TORCH=torch==2.13.0 ...` with a CUDA wheel index.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
# pytest-xdist workers; each test file runs whole on one worker, so module fixtures are built once
TEST_WORKERS ?= 2

.PHONY: install run test test-fast lint bench reference repro serve clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/shipyard run

test: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.pipeline && $(BIN)/python -m bench.onnx_vs_torch
	$(BIN)/python -m bench.families
	$(BIN)/python -m bench.validation
	$(BIN)/python -m bench.serve
	$(BIN)/python -m bench.ddp
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.sweep

# The README's reference results: MNIST-10k and SMS Spam through the pipeline (needs ../shared/datasets).
reference: install
	$(BIN)/python -m bench.reference

repro: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

serve: install
	$(BIN)/shipyard serve

clean:
	rm -rf data models reports export .dvc/cache .dvc/tmp
