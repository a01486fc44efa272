# Two commands on a fresh machine: `make run` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SOURCES := $(shell find wsservice twisted -name '*.py' -o -name '*.html' -o -name '*.js') setup.cfg pyproject.toml
ARGS   ?=

.PHONY: run test install conformance clean help

help:
	@echo "make run   - set up .venv and run 'twistd -n wsservice' with the demo app"
	@echo "make test  - set up .venv with test extras and run the trial suite"
	@echo "make conformance - Autobahn Testsuite (kosoku) against twistd wsservice, TCP and unix"

$(BIN)/python:
	@echo "==> creating virtualenv $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	@echo "==> upgrading pip"
	$(BIN)/pip install --quiet --upgrade pip

# Non-editable on purpose: twistd finds the plugin only in an installed twisted/plugins/.
$(VENV)/.installed: $(BIN)/python $(SOURCES)
	@echo "==> installing wsservice and its test extras into $(VENV) (non-editable)"
	$(BIN)/pip install --quiet '.[test]'
	@rm -rf build
	@touch $@

install: $(VENV)/.installed

run: install
	@echo "==> starting: $(BIN)/twistd -n wsservice $(ARGS)   (Ctrl-C stops it)"
	@echo "==> demo page: http://127.0.0.1:8080/   WebSocket: ws://127.0.0.1:8080/ws"
	$(BIN)/twistd -n --pidfile= wsservice $(ARGS)

test: install
	@echo "==> running the trial suite (tests/) against the installed package"
	$(BIN)/python tests/run.py

$(BIN)/kosoku: $(BIN)/python
	@echo "==> installing kosoku (the Autobahn Testsuite cases, Python 3) into $(VENV)"
	$(BIN)/pip install --quiet kosoku
	@touch $@

# CASES / UNIX_CASES narrow the run, e.g. make conformance CASES='1.* 2.*'
CASES ?= *
UNIX_CASES ?= *
conformance: install $(BIN)/kosoku
	@echo "==> Autobahn Testsuite: cases '$(CASES)' over TCP, '$(UNIX_CASES)' through the unix listener"
	$(BIN)/python conformance/run.py $(foreach c,$(CASES),--cases '$(c)') $(foreach c,$(UNIX_CASES),--unix-cases '$(c)')

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp*
