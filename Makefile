# Two commands do everything on a fresh machine:
#   make run    set up .venv, then start the backend (embedded model) and the frontend
#   make test   set up .venv, then run lint, types and the whole test suite
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
BACKEND_PORT ?= 8000
FRONTEND_PORT ?= 8501
PYTEST_ARGS ?=

.PHONY: run backend frontend cloud-run-local test lint fmt typecheck bench prefetch clean

$(BIN)/.installed: requirements_backend.txt requirements_model.txt requirements_frontend.txt requirements_dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 (or pass PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements_dev.txt
	touch $@

venv: $(BIN)/.installed

prefetch: venv
	$(BIN)/python -m backend.prefetch

# Both services in the foreground; Ctrl-C stops both.
run: prefetch
	@echo "backend:  http://127.0.0.1:$(BACKEND_PORT)/docs"
	@echo "frontend: http://127.0.0.1:$(FRONTEND_PORT)"
	@trap 'kill 0' EXIT INT TERM; \
	PORT=$(BACKEND_PORT) $(BIN)/python -m backend & \
	BACKEND_URL=http://127.0.0.1:$(BACKEND_PORT) PORT=$(FRONTEND_PORT) $(BIN)/python -m frontend & \
	wait

backend: prefetch
	PORT=$(BACKEND_PORT) $(BIN)/python -m backend

frontend: venv
	BACKEND_URL=http://127.0.0.1:$(BACKEND_PORT) PORT=$(FRONTEND_PORT) $(BIN)/python -m frontend

# Both images (podman) run as Cloud Run runs them, found and called through local stand-ins for the
# metadata server, the Admin API and Google's certificates; prints the page's URL; Ctrl-C stops.
# Broken on purpose: .venv/bin/python -m tests.cloudrun.box --scenario no-metadata-server (see --help)
cloud-run-local: venv
	$(BIN)/python -m tests.cloudrun.box

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: venv
	$(BIN)/mypy

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: venv
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
