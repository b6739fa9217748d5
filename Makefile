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
APT_PACKAGES := mosquitto mosquitto-clients influxdb postgresql chromium rabbitmq-server snmpd snmp ffmpeg gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly prometheus prometheus-alertmanager

.PHONY: help system-deps venv lint test demo stack-up stack-down clean bench-ota bench-registry bench-ingest bench-alerts bench-faults bench-wal bench-snmp bench-cctv bench-queries bench-rollups previews bench-city

help:
	@echo "make demo   - a simulated Semarang: stack, fleet, simulators, agents, hub, API and a live summary"
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

# Two workers: most tests wait on real servers; a file stays on one worker (its fixtures).
test: system-deps venv lint
	$(BIN)/pytest -q -n 2 --dist loadfile

stack-up: system-deps venv
	$(BIN)/kotahub stack up

stack-down: venv
	$(BIN)/kotahub stack down

demo: system-deps venv
	$(BIN)/kotahub demo

# One agent polls 500 simulated Modbus devices every 10 s (needs mosquitto; about 90 s).
bench-agent: system-deps venv
	$(BIN)/python bench/agent.py

bench-registry: venv
	$(BIN)/python -m bench.registry

# Hub ingest vs InfluxDB ceiling and broker drain, 15,000 devices (a few minutes); see bench/README.md.
# Each starts its own Mosquitto + InfluxDB on free ports in a temp folder, never .kotahub.
bench-ingest: system-deps venv
	$(BIN)/python -m bench.ingest

# Alert rules: evaluation rate, page latency under load, ingest with and without 1,000 rules.
bench-alerts: system-deps venv
	$(BIN)/python -m bench.alerts

# Hub kill -9, InfluxDB outage, broker restart; prints what was lost (must be nothing).
bench-faults: system-deps venv
	$(BIN)/python -m bench.faults

# CCTV: frames/s per core per stage vs the ffmpeg decode floor, ONVIF checks/min (about a minute).
bench-cctv: system-deps venv
	$(BIN)/python -m bench.cctv

# One whole city (13,700 devices) at its real rates for 10 minutes, every part on this box in a
# process of its own: CPU per part, p99 publish -> queryable, points lost, disk per 30 days.
bench-city: system-deps venv
	$(BIN)/python -m bench.city

# Opening a 2 GiB write-ahead log vs reading it all (about 30 s, 2 GiB of temp disk); see bench/README.md.
bench-wal: venv
	$(BIN)/python -m bench.wal_open

# One poller, 2,300 simulated APs and 54 NTCIP controllers (2 % silent) vs net-snmp; see bench/README.md.
bench-snmp: system-deps venv
	$(BIN)/python -m bench.snmp

# Every board's queries over 30 days of a simulated city, raw and rolled up (several minutes).
bench-queries: system-deps venv
	$(BIN)/python -m bench.queries

# The rollup continuous queries' cost per run at Semarang's full size: can they keep up (~10 min).
bench-rollups: system-deps venv
	$(BIN)/python -m bench.rollups

# Redraw docs/boards/*.png from the boards' queries on a day of a simulated city (~2 min).
previews: system-deps venv
	$(BIN)/python -m bench.queries --days 1 --scale 0.06 --repeats 1 --previews docs/boards

# A 1 MiB signed image to 1,000 reference devices over the real broker (a few minutes).
bench-ota: system-deps venv
	$(BIN)/python -m bench.ota

clean:
	-$(BIN)/kotahub stack down
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
