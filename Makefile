# Two commands on a fresh machine: `make run` (serve the shipped model) and `make test` (everything, tested).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch for training and tests; a GPU host can set TORCH=torch.
TORCH ?= torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test train bench realworld lint system-deps

# The service and its Python client (client/: its own distribution, mnist-predict).
$(BIN)/mnist-serve: pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e . -e ./client
	touch $@

$(VENV)/.dev: $(BIN)/mnist-serve
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[train,dev]"
	touch $@

run: $(BIN)/mnist-serve
	$(BIN)/mnist-serve --host $(HOST) --port $(PORT)

system-deps:
	bash scripts/system-deps.sh

test: $(VENV)/.dev system-deps
	$(BIN)/ruff check .
	$(BIN)/pytest

train: $(VENV)/.dev
	$(BIN)/mnist-train

bench: $(VENV)/.dev system-deps
	$(BIN)/python -m bench.run

realworld: $(VENV)/.dev
	$(BIN)/python -m bench.realworld

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
