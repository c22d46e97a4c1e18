# The two commands of the README: `make serve` and `make test`. Each installs what a fresh
# Debian machine lacks (apt packages, uv, the workspace venv, node packages) and is quick
# when everything is there already.

SHELL := /bin/bash
.DEFAULT_GOAL := help

TOOLS   := .tools
UV      := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
VENV    := .venv
STAMP   := $(VENV)/.virtwire-synced
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)

# apt packages: the core's plus each plugin's plugins/*/apt-packages.txt
APT_PACKAGES := $(sort $(shell cat apt-packages.txt plugins/*/apt-packages.txt 2>/dev/null | sed 's/\#.*//'))
PYPROJECTS   := pyproject.toml $(wildcard core/pyproject.toml plugins/*/pyproject.toml tests/example_plugin/pyproject.toml)

.PHONY: help install apt serve test test-isolated lint bench clean

help:
	@echo "make serve   install, then run the gateway (embedded default, prints a token)"
	@echo "make test    install, then run every test"
	@echo "make test-isolated   each plugin's tests with only that plugin installed"
	@echo "make lint    ruff + mypy"
	@echo "make bench   run the benchmarks in bench/"

install: apt $(STAMP) tests/js/node_modules/.package-lock.json plugins/web/node_modules/.package-lock.json

apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@command -v npm >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; }

$(TOOLS)/bin/uv:
	python3 -m venv $(TOOLS) 2>/dev/null || { rm -rf $(TOOLS); \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq python3-venv >/dev/null; \
	  python3 -m venv $(TOOLS); }
	$(TOOLS)/bin/pip install -q uv

$(STAMP): $(PYPROJECTS) uv.lock | $(UV)
	$(UV) sync --all-packages --frozen --python python3 -q || $(UV) sync --all-packages --python python3 -q
	@touch $@

uv.lock: $(PYPROJECTS) | $(UV)
	$(UV) lock --python python3 -q
	@touch $@

tests/js/node_modules/.package-lock.json: tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# the web console's front-end libraries (served from there; a wheel vendors them)
plugins/web/node_modules/.package-lock.json: plugins/web/package.json plugins/web/package-lock.json
	cd plugins/web && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

serve: install
	$(VENV)/bin/virtwire serve

test: install
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-isolated: install
	bash .ci/isolated

lint: install
	$(VENV)/bin/ruff check core plugins tests bench
	$(VENV)/bin/mypy core/src

bench: install
	@for b in bench/bench_*.py; do echo "== $$b"; $(VENV)/bin/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(TOOLS) .iso tests/js/node_modules plugins/web/node_modules
