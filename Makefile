# The two commands: `make demo` runs the pipeline on the embedded default; `make test` runs every test.
# Each creates .venv and installs the pinned dependency set (constraints.txt) when missing or stale.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP_VERSION := 26.3
# `make demo TASK=multi_label` (or TASK=token_classification): the demo of another task type (the run's override only; params.yaml untouched).
TASK ?=
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast lint bench clean prefect

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "gradus needs Python >= 3.11; set PYTHON=python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "pip==$(PIP_VERSION)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	@touch $@

demo: $(STAMP)  ## the whole lifecycle on the embedded demo data: train, gate, serve, retrain, release, drift
	@test -d .git || (echo "gradus needs a git checkout (DVC versions data alongside git)" >&2; exit 2)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/gradus run $(if $(TASK),--set model.task=$(TASK))
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/gradus lifecycle

test: $(STAMP)  ## the whole test suite
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m tests.suite

test-fast: $(STAMP)  ## everything but the slow tests (training, the pipeline) and those that start a server
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m "not slow and not server"

prefect: $(STAMP)  ## local Prefect server + UI (http://127.0.0.1:4200), the deployments, and a worker
	PATH="$(CURDIR)/$(BIN):$$PATH" infra/local_prefect.sh

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
