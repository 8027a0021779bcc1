# Two commands for a newcomer: `make demo` and `make test`. Each builds .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit install clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[local,dev,distributed,joint,tracking]'
	@# Game of 24 data only; its own pins conflict with ours, so without its dependencies.
	$(PY) -m pip install --quiet --no-deps tree-of-thoughts-llm==0.1.0
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m feedprop demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest -m "not integration"

test: lint typecheck
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
