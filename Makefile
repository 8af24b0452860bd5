# tally: `make run` starts the local platform and a demo; `make test` runs every check.
# Every target installs what it needs first (apt packages when missing, a virtualenv with pinned
# requirements, the Pub/Sub emulator binary) and does nothing the second time.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUILD := .build
PSTEST := $(BUILD)/pstest
# Debian's source of the Pub/Sub fake, copied into a GOPATH of our own (searched first) and
# patched there; its internal/testutil comes along, since Go lets only the same tree import it.
GOCODE := /usr/share/gocode/src/cloud.google.com/go
PSTEST_GOPATH := $(BUILD)/gopath
PSTEST_TREE := $(PSTEST_GOPATH)/src/cloud.google.com/go
APT_PACKAGES := golang-go golang-google-cloud-dev patch
LOAD_PACKAGES := stress-ng
# make test-under-load: the CPU hog beside the suite (workers, one per core here)
LOAD_CPUS ?= 2
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help install run demo test test-under-load lint fmt unit bench bench-full bench-quick chaos fuzz docs clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: $(VENV)/.installed $(PSTEST)  ## install everything the platform and tests need

# $(call apt_install,PACKAGES): install the Debian packages that are missing
define apt_install
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
endef

$(BUILD)/.apt: Makefile
	@mkdir -p $(BUILD)
	$(call apt_install,$(APT_PACKAGES))
	@touch $@

$(BUILD)/.apt-load: Makefile
	@mkdir -p $(BUILD)
	$(call apt_install,$(LOAD_PACKAGES))
	@touch $@

# A fresh copy of Debian's source each time the patch changes, so applying it is idempotent.
$(PSTEST_TREE)/.patched: devstack/pstest/pstest.patch $(BUILD)/.apt
	rm -rf $(PSTEST_TREE) && mkdir -p $(PSTEST_TREE)/pubsub $(PSTEST_TREE)/internal
	cp -r $(GOCODE)/pubsub/pstest $(PSTEST_TREE)/pubsub/
	cp -r $(GOCODE)/internal/testutil $(PSTEST_TREE)/internal/
	patch --quiet --forward -p1 -d $(PSTEST_TREE)/pubsub/pstest < devstack/pstest/pstest.patch
	@touch $@

$(PSTEST): devstack/pstest/main.go $(PSTEST_TREE)/.patched
	@echo "building the Pub/Sub emulator (pstest) from Debian's golang-google-cloud-dev, patched"
	cd devstack/pstest && GO111MODULE=off GOPATH=$(CURDIR)/$(PSTEST_GOPATH):/usr/share/gocode \
	  GOCACHE=$(CURDIR)/$(BUILD)/gocache go build -o $(CURDIR)/$(PSTEST) main.go

$(VENV)/.installed: requirements-dev.txt functions/event_handler/requirements.txt functions/registry/requirements.txt pyproject.toml functions/event_handler/pyproject.toml
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@# editable, both packages: the CLI (tally) and the event handler's code it runs (tally-handler)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
	  -e ./functions/event_handler -e .
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

test-under-load: install lint $(BUILD)/.apt-load  ## make test's suite beside `stress-ng --cpu $(LOAD_CPUS)`
	@stress-ng --cpu $(LOAD_CPUS) --timeout 3h --quiet & hog=$$!; \
	trap 'kill $$hog 2>/dev/null; wait $$hog 2>/dev/null' EXIT; \
	echo "stress-ng --cpu $(LOAD_CPUS) running (pid $$hog)"; \
	$(PY) -m pytest

unit: $(VENV)/.installed  ## the tests that need no server
	$(PY) -m pytest tests/unit

bench: install  ## every benchmark; rewrites bench/results/ and docs/benchmarks.md
	$(PY) -m bench

bench-full: install  ## make bench with more runs, N = 10,000 measured and today's design (an hour or more)
	$(PY) -m bench --full

bench-quick: install  ## a smoke run of the benchmarks
	$(PY) -m bench --quick

chaos: install  ## the chaos run at scale (1,000 runs), fuzzing and security checks
	$(PY) -m tests.chaos --runs 1000

fuzz: install  ## long fuzzing runs: schemathesis on the registry, hypothesis on the handler and the announcement model
	TALLY_SCHEMATHESIS_MAX_EXAMPLES=1000 TALLY_SCHEMATHESIS_MAX_TIME=300 \
	  $(PY) -m pytest tests/integration/test_registry_http.py -k schemathesis
	TALLY_FUZZ_EXAMPLES=1000 $(PY) -m pytest tests/integration/test_fuzz_handler.py
	TALLY_MODEL_EXAMPLES=2000 TALLY_MODEL_RANDOM=1 $(PY) -m pytest tests/unit/test_announce_model.py

docs: $(VENV)/.installed  ## regenerate terraform/README.md's variables and outputs tables
	$(PY) tools/tfdoc.py terraform

clean:  ## remove the virtualenv, build cache and platform state
	rm -rf $(VENV) $(BUILD) .devstack
