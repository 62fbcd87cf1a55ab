# The README's commands. `make run` and `make test` each install what they need first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Stage commands in dvc.yaml call `python`: put the project's environment first on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)
# No usage reports leave the machine (DVC's is off in .dvc/config).
export RAY_USAGE_STATS_ENABLED ?= 0
export MLFLOW_DISABLE_TELEMETRY ?= true
export DO_NOT_TRACK ?= 1

.PHONY: setup run test test-fast lint format ui lock clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# torch first, pinned, so that nothing depending on torch pulls another build. Where pip
	@# finds the CPU wheel (these machines keep it in pip's find-links) that is what comes; on
	@# PyPI alone Linux gets the CUDA build: set TORCH_INDEX to PyTorch's CPU wheel index.
	$(BIN)/pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet -c requirements.lock -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

run: setup  ## the whole pipeline on the embedded default (Adult data, local Ray, SQLite MLflow)
	$(BIN)/dvc repro

test: setup  ## every test tier: unit, integration (real Ray/MLflow/DVC) and end-to-end
	$(BIN)/python -m pytest

test-fast: setup  ## unit tests only
	$(BIN)/python -m pytest tests/unit

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check src pipelines tests

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format src pipelines tests

ui: setup  ## MLflow UI on the embedded store, loopback only
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

lock: setup  ## re-pin requirements.lock from the current environment
	{ head -n 2 requirements.lock; $(BIN)/pip freeze --exclude-editable | sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:  ## remove pipeline outputs and the local MLflow store (keeps .venv and data/raw)
	rm -rf data/validated data/prepared data/augmented data/predictions models metrics plots reports mlflow.db mlruns
