# Facial-emotion analytics platform. `make run` serves the quick start; `make test` runs the whole test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Locked dependencies (requirements/*.in compiled by `make lock`): serving, training, tests and tooling. One
# environment installs all three; the Docker image installs only serve.txt.
LOCKS := requirements/serve.txt requirements/train.txt requirements/dev.txt
STAMP := $(VENV)/.installed-$(shell cat $(LOCKS) | sha256sum | cut -c1-16)
# Type-checked paths: only those that exist (sessions_app/services may be a module or a package).
MYPY_PATHS := $(wildcard inference sessions_app/services sessions_app/services.py sessions_app/selectors.py)

.PHONY: venv run run-https test test-fast bench lint check-locks lock format train evaluate clean

venv: $(STAMP)

# --no-deps: the locks are complete closures, so pip installs exactly the pinned files and never resolves; a resolver
# run in hash mode fails on a dependency with extras (weasyprint's `fonttools[woff]`) once PyPI has a newer release.
$(STAMP): $(LOCKS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-deps --require-hashes $(addprefix -r ,$(LOCKS))
	$(PY) -m pip check
	rm -f $(VENV)/.installed-* && touch $@

## Quick start: SQLite, local Redis, daphne + Celery worker on http://127.0.0.1:8000 (Ctrl-C stops all).
run: venv
	$(PY) scripts/run.py

## The quick start over HTTPS for a classroom LAN: Caddy with its local CA on https://$$FER_HOSTNAME:$$FER_HTTPS_PORT
## (defaults: this machine's host name, 8443); prints the URL and where the CA certificate is.
run-https: venv
	$(PY) scripts/run.py --https

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

## Locks up to date with their .in files (checked before installing), then ruff, formatting and mypy: all three run,
## and lint fails if any of them failed.
lint: check-locks venv
	@status=0; \
	echo "ruff check ."; $(VENV)/bin/ruff check . || status=1; \
	echo "ruff format --check ."; $(VENV)/bin/ruff format --check . || status=1; \
	echo "mypy $(MYPY_PATHS)"; DJANGO_DEBUG=true $(VENV)/bin/mypy $(MYPY_PATHS) || status=1; \
	exit $$status

check-locks:
	$(PYTHON) scripts/check_locks.py

## Recompile the locks after editing requirements/*.in (keeps existing pins; make lock LOCK_ARGS=--upgrade, or
## LOCK_ARGS="--upgrade-package django", to move them).
PIP_COMPILE := $(abspath $(VENV))/bin/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe \
	--no-emit-index-url --no-emit-find-links
lock: venv
	cd requirements && for name in serve train dev; do \
		CUSTOM_COMPILE_COMMAND="make lock" $(PIP_COMPILE) $(LOCK_ARGS) $$name.in -o $$name.txt || exit 1; \
	done
	$(PYTHON) scripts/check_locks.py --update

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
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache staticfiles
