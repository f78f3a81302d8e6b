# Two commands matter: `make run` (the local platform) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000

.PHONY: run test bench lint-infra api-docs clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip<26.3"
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

run: $(STAMP)  ## the local platform on the embedded backend, state under $$NIMBUS_HOME (default ~/.nimbus)
	$(BIN)/nimbus up --port $(PORT)

test: $(STAMP)  ## the whole suite: unit, contract (local + moto), api, sdk, cli, e2e, infra, fuzz
	$(BIN)/python -m pytest -n 2

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/runs.py

api-docs: $(STAMP)  ## rewrite docs/api.md's table of every route from the OpenAPI document
	$(BIN)/python -m chalicelib.api.route_table

lint-infra: $(STAMP)
	$(BIN)/python infra/build.py --check
	$(BIN)/cfn-lint infra/template.json

clean:
	rm -rf $(VENV)
