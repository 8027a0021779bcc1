# Two commands for a newcomer: `make demo` and `make test`. Each builds .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit install browser clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[local,dev,distributed,joint,tracking]'
	@# Game of 24 data only; its own pins conflict with ours, so without its dependencies.
	$(PY) -m pip install --quiet --no-deps tree-of-thoughts-llm==0.1.0
	@touch $(STAMP)

install: $(STAMP) browser

# Headless Chromium and its driver for the run page's browser tests (tests/test_run_page_browser.py):
# installed with apt-get when missing and we are root on a Debian-like system; otherwise we say how
# (without them those tests are skipped, saying why).
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
		echo "browser tests: $$(command -v chromium) and $$(command -v chromedriver)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else \
		echo "browser tests need Chromium and chromedriver; install them, e.g. 'sudo apt-get install chromium chromium-driver'"; \
	fi

demo: $(STAMP)
	$(PY) -m feedprop demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP) browser
	$(VENV)/bin/pytest -m "not integration"

test: lint typecheck browser
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
