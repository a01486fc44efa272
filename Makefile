# Two commands on a fresh machine: `make run` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SOURCES := $(shell find wsservice twisted -name '*.py' -o -name '*.html' -o -name '*.js') setup.cfg pyproject.toml
ARGS   ?=

.PHONY: run test install clean help

help:
	@echo "make run   - set up .venv and run 'twistd -n wsservice' with the demo app"
	@echo "make test  - set up .venv with test extras and run the trial suite"

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

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp*
