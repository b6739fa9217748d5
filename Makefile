# Kotahub: `make demo` runs the stack and the simulated city, `make test` runs the checks.
# Both set up everything they need on a fresh Debian/Ubuntu machine.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kotahub-installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the stack and the tests run for real.
APT_PACKAGES := mosquitto mosquitto-clients influxdb postgresql chromium rabbitmq-server

.PHONY: help system-deps venv lint test demo stack-up stack-down clean bench-registry bench-ingest bench-faults bench-wal

help:
	@echo "make demo   - start the local stack (Mosquitto + InfluxDB) and run Kotahub (hub, registry)"
	@echo "make test   - lint (ruff, mypy --strict) and run the test suite"
	@echo "make lint   - only the linters"
	@echo "make stack-down - stop what 'make demo' started"

system-deps:
	@missing=""; \
	for pkg in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$pkg"; \
	done; \
	if ! $(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1; then missing="$$missing python3-venv"; fi; \
	if [ -n "$$missing" ]; then \
	  if ! command -v apt-get >/dev/null; then \
	    echo "error: missing system packages:$$missing; this machine has no apt-get, install them by hand" >&2; exit 1; \
	  fi; \
	  if [ -n "$(SUDO)" ] && ! command -v sudo >/dev/null; then \
	    echo "error: need root or sudo to install:$$missing" >&2; exit 1; \
	  fi; \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
	  || { echo "error: apt-get could not install:$$missing" >&2; exit 1; }; \
	fi

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "error: Kotahub needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) --version)" >&2; exit 1; }
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV) || { echo "error: could not create $(VENV)" >&2; exit 1; }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all,dev]' || { echo "error: pip could not install Kotahub's dependencies" >&2; exit 1; }
	@touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: system-deps venv lint
	$(BIN)/pytest -q

stack-up: system-deps venv
	$(BIN)/kotahub stack up

stack-down: venv
	$(BIN)/kotahub stack down

demo: system-deps venv
	$(BIN)/kotahub stack up
	@echo
	@echo "Kotahub now runs in this terminal until Ctrl-C: hub ingest (MQTT -> InfluxDB), the registry"
	@echo "API (http://127.0.0.1:18090/docs) and the technician page (http://127.0.0.1:18090/)."
	@echo "In another terminal:  .venv/bin/kotahub registry token create me --role admin"
	@echo "The simulated Semarang fleet arrives with the demo issue. Stop the stack: make stack-down"
	@echo
	$(BIN)/kotahub run

# One agent polls 500 simulated Modbus devices every 10 s (needs mosquitto; about 90 s).
bench-agent: system-deps venv
	$(BIN)/python bench/agent.py

bench-registry: venv
	$(BIN)/python -m bench.registry

# Hub ingest vs InfluxDB ceiling and broker drain, 15,000 devices (a few minutes); see bench/README.md.
# Each starts its own Mosquitto + InfluxDB on free ports in a temp folder, never .kotahub.
bench-ingest: system-deps venv
	$(BIN)/python -m bench.ingest

# Hub kill -9, InfluxDB outage, broker restart; prints what was lost (must be nothing).
bench-faults: system-deps venv
	$(BIN)/python -m bench.faults

# Opening a 2 GiB write-ahead log vs reading it all (about 30 s, 2 GiB of temp disk); see bench/README.md.
bench-wal: venv
	$(BIN)/python -m bench.wal_open

clean:
	-$(BIN)/kotahub stack down
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
