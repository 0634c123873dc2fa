# Plietsch Twin: `make run` and `make test` install whatever is missing, then run.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml package.json 2>/dev/null | sha1sum | cut -c1-12)
CHROMIUM := $(shell command -v chromium 2>/dev/null)
# the LoRaWAN source's tests (and 'make run' with LoRaWAN configured) start Debian's Mosquitto MQTT broker
MOSQUITTO := $(shell command -v mosquitto 2>/dev/null || ls /usr/sbin/mosquitto 2>/dev/null)
# the TLS test runs infra/Caddyfile with Debian's Caddy in front of the API (the compose stack's TLS termination)
CADDY := $(shell command -v caddy 2>/dev/null)

.PHONY: run test drill lint typecheck bench install system-deps clean

$(BIN)/python:
	@command -v $(PY) >/dev/null || { echo "Python 3.11+ is needed: install python3.11 (e.g. apt-get install python3.11 python3.11-venv)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml package.json
	$(BIN)/python -m pip install -q -e '.[test]'
	@if [ -f package.json ]; then npm install --no-audit --no-fund --loglevel=error; fi
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

system-deps:
	@if [ -z "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null; \
	  else echo "Chromium is missing: run 'sudo apt-get install chromium' (the browser tests need it)"; exit 1; fi; fi
	@if [ -z "$(MOSQUITTO)" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
	  else echo "Mosquitto is missing: run 'sudo apt-get install mosquitto' (the LoRaWAN tests need it)"; exit 1; fi; fi
	@if [ -z "$(CADDY)" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq caddy >/dev/null; \
	  else echo "Caddy is missing: run 'sudo apt-get install caddy' (the TLS test needs it)"; exit 1; fi; fi

install: $(STAMP)

run: install
	$(BIN)/plietsch run

test: install system-deps
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The long fault drills (many kills, long pauses); 'make test' runs the same drills in a bounded form.
drill: install system-deps
	PLIETSCH_DRILL=full $(BIN)/python -m pytest -q -p no:cacheprovider -m drill

bench: install
	$(BIN)/python -m bench.pipeline
	$(BIN)/python -m bench.apply
	$(BIN)/python -m bench.rebuild
	$(BIN)/python -m bench.api
	$(BIN)/python -m bench.flood
	$(BIN)/python -m bench.readmodel
	$(BIN)/python -m bench.history
	$(BIN)/python -m bench.startup
	$(BIN)/python -m bench.soak --events 1000000

clean:
	rm -rf $(VENV) node_modules .plietsch
