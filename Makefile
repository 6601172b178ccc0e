# Two commands do everything on a fresh machine:
#   make run    set up .venv, then start the backend (embedded model) and the frontend
#   make test   set up .venv, then run lint, types and the whole test suite
# and one for the inner loop: make check (lint, types and the tests not marked slow, in under a minute).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
BACKEND_PORT ?= 8000
FRONTEND_PORT ?= 8501
PLOTTER_PORT ?= 8090
PYTEST_ARGS ?=
# The one tool beyond Python and make: uv, from PyPI, at the version the dev group in pyproject.toml pins
# (tests/test_dependencies.py checks that the two agree).
UV_VERSION := 0.13.9
UV ?= $(BIN)/uv
# Where `make requirements` writes the requirements_*.txt files (the test regenerates them elsewhere).
REQUIREMENTS_DIR ?= .

.PHONY: run backend frontend plotter cloud-run-local test clients check lint fmt typecheck bench bench-peers mutate prefetch clean venv lock requirements

# uv, bootstrapped into the venv with pip when missing (a fresh machine has only Python and make).
$(BIN)/uv:
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 (or pass PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)

# The venv is exactly the lock's dev group (which includes every other group): --locked fails when
# pyproject.toml changed without `make lock`.
$(BIN)/.installed: pyproject.toml uv.lock | $(BIN)/uv
	UV_PROJECT_ENVIRONMENT=$(abspath $(VENV)) $(BIN)/uv sync --locked --quiet
	touch $@

venv: $(BIN)/.installed

# After editing the dependency groups in pyproject.toml: resolve them into uv.lock, then regenerate the
# requirements files. A bare `uv lock` keeps every version already locked; `uv lock --upgrade-package NAME`
# moves one.
lock: | $(UV)
	$(UV) lock
	$(MAKE) requirements

# The requirements files the images install, generated from uv.lock with hashes (pip --require-hashes).
# requirements_model.txt leaves out torch and torchvision, which backend.dockerfile installs as CPU-only
# builds from the PyTorch index, and the CUDA packages only PyPI's GPU build of torch needs.
GPU_ONLY = $(shell sed -n -E 's/^name = "((nvidia|cuda)-[a-z0-9-]+|triton)"$$/\1/p' uv.lock)
EXPORT = $(UV) export --frozen --no-emit-project
GENERATED = \# Generated from uv.lock by `make requirements`: do not edit (change pyproject.toml, then `make lock`).
requirements: | $(UV)
	{ echo '$(GENERATED)'; $(EXPORT) --only-group backend; } > $(REQUIREMENTS_DIR)/requirements_backend.txt
	{ echo '$(GENERATED)'; $(EXPORT) --only-group frontend; } > $(REQUIREMENTS_DIR)/requirements_frontend.txt
	{ echo '$(GENERATED)'; $(EXPORT) --only-group model --no-emit-package torch --no-emit-package torchvision \
		$(addprefix --no-emit-package ,$(GPU_ONLY)); } > $(REQUIREMENTS_DIR)/requirements_model.txt
	{ echo '$(GENERATED)'; $(EXPORT) --only-group dev --no-hashes; } > $(REQUIREMENTS_DIR)/requirements_dev.txt

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

# The optional R plotting service (plotter/, README "Optional: the R plotting service"): needs R with Debian's
# r-cran-plumber, r-cran-ggplot2 and r-cran-ragg. The frontend draws its charts with
# PLOTTER_URL=http://127.0.0.1:$(PLOTTER_PORT) make frontend
plotter:
	@command -v Rscript >/dev/null || { echo "Rscript not found: apt-get install -y --no-install-recommends r-cran-plumber r-cran-ggplot2 r-cran-ragg"; exit 1; }
	HOST=127.0.0.1 PORT=$(PLOTTER_PORT) Rscript plotter/main.R

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

test: venv clients
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# tritonclient and KServe's SDK, which tests/protocols runs unmodified as subprocesses, in a venv of their own
# (their dependencies are not ours). Fully pinned in tests/protocols/requirements_clients.txt.
CLIENTS_VENV ?= .venv-clients
$(CLIENTS_VENV)/.installed: tests/protocols/requirements_clients.txt
	test -x $(CLIENTS_VENV)/bin/python || $(PYTHON) -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/python -m pip install --quiet -r tests/protocols/requirements_clients.txt
	touch $@

clients: $(CLIENTS_VENV)/.installed

# The inner loop: lint, types (incremental) and the tests not marked slow, spread over every CPU
# (pytest-xdist). Under a minute on 2 CPUs; DEVELOPING.md says when to run which.
check: lint typecheck
	$(BIN)/python -m pytest -m "not slow" --numprocesses=auto $(PYTEST_ARGS)

bench: venv
	$(BIN)/python -m bench

# This server beside BentoML, LitServe, TorchServe (needs Java) and PyTriton, each installed into .venv-peers/
# (docs/benchmark.md, Peers): about 10 minutes; writes the Peers section of BENCHMARKS.md.
bench-peers: venv
	$(BIN)/python -m bench --peers

# Mutation testing of the core modules (docs/testing.md): an hour or more on 2 CPUs, so not part of `make test`.
# One module: make mutate MUTANTS='backend.uploads.*'; survivors: .venv/bin/mutmut show <name>.
MUTANTS ?=
mutate: venv
	TEST_MODEL_CACHE=$(CURDIR)/mutants/.model-cache $(BIN)/mutmut run --max-children 2 $(MUTANTS)
	$(BIN)/mutmut results

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
