# Two commands on a fresh machine: `make run` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SOURCES := $(shell find wsservice twisted -name '*.py' -o -name '*.html' -o -name '*.js' -o -name '*.ico' -o -name '*.ts' -o -name '*.json' -o -name '*.css') wsservice/py.typed setup.cfg pyproject.toml
ARGS   ?=

.PHONY: run test memory install system-deps typecheck conformance bench soak cluster soak-cluster clean help

help:
	@echo "make run   - set up .venv and run 'twistd -n wsservice' with the demo app"
	@echo "make test  - set up .venv with test extras and run the trial suite"
	@echo "make memory - RSS of a real twistd under soak-scale load (memtests/, ~20 s)"
	@echo "make conformance - Autobahn Testsuite (kosoku) against twistd wsservice, TCP and unix"
	@echo "make bench - side-by-side benchmark: wsservice vs bare Autobahn, Node socket.io, python-socketio (~11 min)"
	@echo "make soak  - 200 clients for 60 s with drops and resumes; checks nothing is lost"
	@echo "make cluster - Redis, two nodes and HAProxy serving the demo on http://127.0.0.1:8080/"
	@echo "make soak-cluster - Redis + 3 nodes, 200 clients, a node killed -9 every 20 s; 0 lost"

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
	@echo "==> its 'listening on' lines below give the URLs it really serves"
	$(BIN)/twistd -n --pidfile= wsservice $(ARGS)

# Programs the tests run for real (systemd-analyze, ...): installed from Debian if missing.
system-deps:
	@sh scripts/system-deps.sh

typecheck: install
	@echo "==> type-checking wsservice/ with mypy (zope.interface plugin)"
	$(BIN)/mypy

# The browser tests' dependencies (playwright-core, and typescript to check wsservice.d.ts;
# exact versions in package-lock.json). No browser download: the tests drive Debian's
# /usr/bin/chromium (system-deps).
BROWSER_TESTS := tests/browser
$(BROWSER_TESTS)/node_modules/.installed: $(BROWSER_TESTS)/package.json $(BROWSER_TESTS)/package-lock.json
	@echo "==> installing the browser tests' dependencies (playwright-core without a browser download, typescript) into $(BROWSER_TESTS)/node_modules"
	cd $(BROWSER_TESTS) && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
	@touch $@

test: install system-deps typecheck $(BROWSER_TESTS)/node_modules/.installed
	@echo "==> running the trial suite (tests/): in-process tests import this checkout,"
	@echo "    twistd and README tests run the copy just installed in $(VENV)"
	$(BIN)/python tests/run.py

# Soak-scale: 221 sessions x 1000 pushes, 20 non-reading clients; RSS read from /proc.
memory: install
	@echo "==> memory bounds (memtests/): a twistd running this checkout, its RSS under load"
	$(BIN)/python tests/run.py memtests

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

bench: install
	@echo "==> installing the load generators' and the Node peer's dependencies (ws, socket.io, socket.io-client) into bench/node_modules"
	cd bench && npm ci --silent
	@echo "==> installing the python-socketio peer (the bench extra: python-socketio, uvicorn, websockets, uvloop) into $(VENV)"
	$(BIN)/pip install --quiet '.[bench]'
	@rm -rf build
	@echo "==> benchmark: each server in turn, medians of 3 runs (about 11 minutes)"
	cd bench && ../$(BIN)/python run.py $(ARGS)

soak: install
	@echo "==> soak: 200 clients, 60 s, random drops and resumes"
	$(BIN)/python bench/soak.py $(ARGS)

cluster: install
	@sh scripts/system-deps.sh cluster
	@echo "==> cluster: Redis, 2 nodes, HAProxy on http://127.0.0.1:8080/ (Ctrl-C stops all of it)"
	$(BIN)/python scripts/cluster.py $(ARGS)

soak-cluster: install
	@sh scripts/system-deps.sh cluster
	@echo "==> soak-cluster: Redis + 3 nodes, 200 clients, 60 s, a node killed -9 every 20 s"
	$(BIN)/python bench/soak_cluster.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp*
