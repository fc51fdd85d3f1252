# nightshift: `make demo` runs the main job on embedded defaults, `make test` runs the tests.
# Both bootstrap everything on a fresh machine (Python 3.11 + pip): uv, .venv, the locked deps.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(PYTHON) -m uv
STAMP := $(VENV)/.installed
STATE := $(or $(NIGHTSHIFT_STATE_DIR),$(CURDIR)/.nightshift)
export UV_PYTHON_DOWNLOADS := never
export PYTHONDONTWRITEBYTECODE := 1
export MLFLOW_DISABLE_TELEMETRY ?= true

.PHONY: help install demo demo-llm demo-demand demo-shadow test test-integration bench screenshots serve lock mlflow-ui server pool deploy worker serve-flows stack stack-stop stack-status postgres postgres-stop clean

help:
	@echo "make demo       run the main job on embedded defaults (offline)"
	@echo "make demo-llm   prompt + model candidates evaluated, gated and promoted (stand-in provider, offline)"
	@echo "make demo-demand  bring your own model: examples/demand adopted, then 12 nights of its own pipeline (regression)"
	@echo "make demo-shadow  a challenger the offline gate would promote, shadowed on a real model server and dropped live"
	@echo "make test       the layer contracts (lint-imports), then the fast test suite (under ~3 minutes)"
	@echo "make test-integration  the slower end-to-end tests (nightly week, real servers)"
	@echo "make bench      benchmarks (docs/benchmarks.md): drift, serving, capture, batch scoring, fleet, HP search, a night, drift false alarms, estimate bands; BENCH_ARGS=\"--only night\""
	@echo "make screenshots  the README's pictures (docs/*.png): a real demo week on temporary servers, shot by chromium"
	@echo "make serve      model server for the champion on http://127.0.0.1:8000 (NIGHTSHIFT_SERVER_PORT)"
	@echo "make mlflow-ui  MLflow UI on http://127.0.0.1:5000 for the local state"
	@echo "make server     Prefect UI on http://127.0.0.1:4200 (shows the demo's runs)"
	@echo "make deploy     create the process work pool if missing and deploy prefect.yaml (needs make server)"
	@echo "make worker     start a process worker for the pool"
	@echo "make serve-flows  all deployments served from one process (no pool, no worker; needs make server)"
	@echo "make stack      the production-like stack: PostgreSQL, Prefect + MLflow servers with auth, workers, model server"
	@echo "                (STACK_WORKERS=2); while it runs, demo/deploy/worker/serve use it; make stack-stop, make stack-status"
	@echo "make postgres   local PostgreSQL 15 for the Prefect server (scale path); make postgres-stop"
	@echo "make lock       re-resolve requirements.lock from pyproject.toml"
	@echo "make clean      delete .venv and the local state dir .nightshift/"

$(STAMP): requirements.lock pyproject.toml
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	@test -x $(PY) || $(UV) venv $(VENV) --python "$$($(PYTHON) -c 'import sys; print(sys.executable)')" --quiet
	$(UV) pip sync --python $(PY) --quiet requirements.lock
	$(UV) pip install --python $(PY) --quiet --no-deps -e .
	@mkdir -p .nightshift  # parent of the Prefect home in pyproject.toml [tool.prefect]
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(WITH_STACK) $(PY) -m cli.demo

demo-llm: $(STAMP)
	$(PY) -m cli.demo_llm

demo-demand: $(STAMP)
	$(PY) -m cli.demo_demand

demo-shadow: $(STAMP)
	$(PY) -m cli.demo_shadow

test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -m "not integration"

test-integration: $(STAMP)
	$(PY) -m pytest -m integration --durations=10

serve: $(STAMP)
	$(WITH_STACK) $(PY) -m serving.server

bench: $(STAMP)
	$(PY) -m benchmarks $(BENCH_ARGS)

screenshots: $(STAMP)
	$(PY) docs/screenshots.py

lock:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes --quiet \
		--no-header --output-file requirements.lock

mlflow-ui: $(STAMP)
	@mkdir -p $(STATE)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(STATE)/mlflow.db \
		--default-artifact-root $(STATE)/mlartifacts --host 127.0.0.1 --port 5000

server: $(STAMP)
	@mkdir -p $(STATE)/prefect
	PREFECT_HOME=$(STATE)/prefect PREFECT_SERVER_ANALYTICS_ENABLED=false \
		$(VENV)/bin/prefect server start --host 127.0.0.1 --port 4200

# While `make stack` runs, its client.env (URLs, credentials) makes these targets its clients; else the defaults.
STACK_ENV := $(STATE)/stack/client.env
WITH_STACK := set -a; [ ! -f $(STACK_ENV) ] || . $(STACK_ENV); set +a;
PREFECT_ENV := $(WITH_STACK) export PREFECT_HOME=$${PREFECT_HOME:-$(STATE)/prefect} \
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:4200/api} \
	NIGHTSHIFT_WORK_POOL=$${NIGHTSHIFT_WORK_POOL:-nightshift-process};
STACK_WORKERS ?= 2

pool: $(STAMP)
	$(PREFECT_ENV) $(PY) -m deployments.deploy --pool-only

deploy: $(STAMP)
	$(PREFECT_ENV) $(PY) -m deployments.deploy

worker: $(STAMP)
	$(PREFECT_ENV) $(VENV)/bin/prefect worker start --pool $$NIGHTSHIFT_WORK_POOL

stack: $(STAMP)
	$(PY) -m deployments.stack start --state-dir $(STATE) --workers $(STACK_WORKERS)

stack-stop: $(STAMP)
	$(PY) -m deployments.stack stop --state-dir $(STATE)

stack-status: $(STAMP)
	$(PY) -m deployments.stack status --state-dir $(STATE)

postgres: $(STAMP)
	$(PY) -m deployments.postgres start --data-dir $(STATE)/postgres --port $(or $(PGPORT),5432)

postgres-stop: $(STAMP)
	$(PY) -m deployments.postgres stop --data-dir $(STATE)/postgres

serve-flows: $(STAMP)
	$(PREFECT_ENV) $(PY) -m deployments.serve

clean:
	rm -rf $(VENV) $(STATE)
