# The front door. `make dev` and `make test` work on a fresh machine with only Python 3.11+.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: dev test lint format typecheck migrate bench stop clean-dev

$(STAMP): pyproject.toml requirements.lock
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/python -m pip install -q --upgrade pip uv
	@$(VENV)/bin/uv pip install -q --python $(VENV)/bin/python -r requirements.lock
	@$(VENV)/bin/uv pip install -q --python $(VENV)/bin/python --no-deps -e .
	@touch $(STAMP)

dev: $(STAMP)
	@$(VENV)/bin/python scripts/devenv.py dev

test: $(STAMP)
	@$(VENV)/bin/python scripts/devenv.py test $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: $(STAMP)
	$(VENV)/bin/mypy config contracts tenants billing proxy dashboard

migrate: $(STAMP)
	$(VENV)/bin/python manage.py migrate

bench: $(STAMP)
	@$(VENV)/bin/python scripts/bench.py
	@$(VENV)/bin/python scripts/bench_dashboard.py

stop:
	@$(PYTHON) scripts/devenv.py stop

clean-dev: stop
	rm -rf .dev
