# The two commands of the README: `make run` and `make test`. Everything they need is installed
# here, so both work on a fresh clone (Python 3.11+, Node.js 20+, and apt-get for Chromium).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NPM := $(shell command -v npm 2>/dev/null)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_SOURCES := $(shell find client_demo/src client_demo/index.html client_demo/vite.config.ts client_demo/tsconfig*.json client_demo/initial-state.json -type f 2>/dev/null)
PORT ?= 8000

.PHONY: run test check lint typecheck pytest vitest install install-test node-deps demo chromium redis bench bench-quick screenshots clean

run: install
	@if [ -n "$(NPM)" ]; then $(MAKE) --no-print-directory demo; \
	else echo "Node.js/npm not found: the API runs, but to see the demo install Node.js 20+ and run:"; \
	     echo "    cd client_demo && npm ci && npm run build"; fi
	$(BIN)/python -m server --port $(PORT) --initial-state client_demo/initial-state.json

test: install-test node-deps demo chromium redis
	$(MAKE) --no-print-directory check
	cd client_demo && npm test
	$(BIN)/python -m pytest

check: lint typecheck

lint: install-test
	$(BIN)/ruff check server tests benchmarks examples

typecheck: install-test
	$(BIN)/mypy

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

install-test: $(VENV)/.installed-test
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(VENV)/.installed $@

node-deps: client_demo/node_modules/.installed
client_demo/node_modules/.installed: client_demo/package.json client_demo/package-lock.json
	cd client_demo && npm ci --no-audit --no-fund
	touch $@

demo: client_demo/dist/index.html
client_demo/dist/index.html: client_demo/node_modules/.installed $(DEMO_SOURCES)
	cd client_demo && npm run build

# Debian's Chromium for the browser tests (Playwright cannot download browsers here)
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif command -v apt-get >/dev/null; then \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium fonts-noto-color-emoji; \
	else echo "warning: no /usr/bin/chromium and no apt-get: the browser tests will fail"; fi

# Debian's redis-server for the Redis store tests (started by the test fixtures)
redis:
	@if command -v redis-server >/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server; \
	else echo "warning: no redis-server and no apt-get: the Redis tests will fail"; fi

bench: install-test node-deps
	$(BIN)/python -m benchmarks

bench-quick: install-test node-deps
	$(BIN)/python -m benchmarks --quick

# refresh the README's screenshots (the browser tests take them elsewhere otherwise)
screenshots: install-test node-deps demo chromium
	UPDATE_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/test_demo_browser.py tests/test_presence_browser.py

clean:
	rm -rf $(VENV) client_demo/node_modules client_demo/dist .pytest_cache .mypy_cache .ruff_cache
