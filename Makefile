# tally: `make run` starts the local platform and a demo; `make test` runs every check.
# Every target installs what it needs first (apt packages when missing, a virtualenv with pinned
# requirements, the Pub/Sub emulator binary) and does nothing the second time.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUILD := .build
PSTEST := $(BUILD)/pstest
APT_PACKAGES := golang-go golang-google-cloud-dev
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help install run demo test lint fmt unit bench bench-quick chaos fuzz docs clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: $(VENV)/.installed $(PSTEST)  ## install everything the platform and tests need

$(BUILD)/.apt:
	@mkdir -p $(BUILD)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@touch $@

$(PSTEST): devstack/pstest/main.go $(BUILD)/.apt
	@echo "building the Pub/Sub emulator (pstest) from Debian's golang-google-cloud-dev"
	cd devstack/pstest && GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=$(CURDIR)/$(BUILD)/gocache \
	  go build -o $(CURDIR)/$(PSTEST) main.go

$(VENV)/.installed: requirements-dev.txt functions/event_handler/requirements.txt functions/registry/requirements.txt pyproject.toml
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@# editable: the tally CLI reads bigquery/queries/ and functions/event_handler/ from the checkout
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

run: install  ## start the local platform, run the demo, keep serving until Ctrl-C
	$(PY) -m devstack run

demo: install  ## the demo alone, non-interactive: exits 0 only if the run was announced once
	$(PY) -m devstack demo

lint: $(VENV)/.installed  ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: $(VENV)/.installed  ## format and fix what ruff can
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: install lint  ## lint, then the whole pytest suite (unit, integration, terraform)
	$(PY) -m pytest

unit: $(VENV)/.installed  ## the tests that need no server
	$(PY) -m pytest tests/unit

bench: install  ## every benchmark; rewrites bench/results/ and docs/benchmarks.md
	$(PY) -m bench

bench-quick: install  ## a smoke run of the benchmarks
	$(PY) -m bench --quick

chaos: install  ## the chaos run at scale (1,000 runs), fuzzing and security checks
	$(PY) -m tests.chaos --runs 1000

fuzz: install  ## long fuzzing runs: schemathesis on the registry, hypothesis on the handler
	TALLY_SCHEMATHESIS_MAX_EXAMPLES=1000 TALLY_SCHEMATHESIS_MAX_TIME=300 \
	  $(PY) -m pytest tests/integration/test_registry_http.py -k schemathesis
	TALLY_FUZZ_EXAMPLES=1000 $(PY) -m pytest tests/integration/test_fuzz_handler.py

docs: $(VENV)/.installed  ## regenerate terraform/README.md's variables and outputs tables
	$(PY) tools/tfdoc.py terraform

clean:  ## remove the virtualenv, build cache and platform state
	rm -rf $(VENV) $(BUILD) .devstack
