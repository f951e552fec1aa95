# Facial-emotion analytics platform. `make run` serves the quick start; `make test` runs the whole test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum requirements.txt | cut -c1-16)

.PHONY: venv run test test-fast bench lint format train evaluate clean

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $@

## Quick start: SQLite, local Redis, daphne + Celery worker on http://127.0.0.1:8000 (Ctrl-C stops all).
run: venv
	$(PY) scripts/run.py

## All tests against real PostgreSQL, Redis, Celery and headless Chromium.
test: venv
	@scripts/ensure_chromium.sh
	@eval "$$(scripts/services.sh)" && $(PY) -m pytest $(PYTEST_ARGS)

## Tests without the browser and worker end-to-end tests.
test-fast: venv
	@eval "$$(scripts/services.sh)" && $(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)

## Speed and memory benchmarks (inference bench; the load test needs `make run` in another terminal).
bench: venv
	$(PY) -m inference bench

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## Train on FER2013: make train DATA=path/to/fer2013.csv[.gz] [ARGS="--epochs 50"]
DATA ?= ../shared/data/fer2013/fer2013_train_val.csv.gz
train: venv
	$(PY) -m inference train --data $(DATA) --out runs/latest $(ARGS)

evaluate: venv
	$(PY) -m inference evaluate $(DATA) --usage PublicTest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache staticfiles
