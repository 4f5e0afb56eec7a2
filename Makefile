# One command to serve, one to test. Both work from a clean clone (Python 3.11+).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned through constraints.txt everywhere: an unpinned torch pulls a multi-GB CUDA build.
PIP := $(BIN)/pip install -q -c constraints.txt
PLUGINS := $(wildcard plugin_packages/cloudeasyml-*)
# pytest-xdist workers for `make test`: a one-at-a-time run keeps one core busy and waits on servers and databases;
# two workers use both cores of a 2-core CI VM (README, Tests: the measured times);
# tests marked `serial` (latency and timing targets) still run while no other test runs (tests/support/workers.py).
TEST_WORKERS ?= 2

.PHONY: install serve test fuzz bench export clean

$(VENV)/.installed: pyproject.toml constraints.txt $(wildcard plugin_packages/*/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(PIP) -e ".[export,test]" $(addprefix -e ,$(PLUGINS))
	touch $@

install: $(VENV)/.installed  ## Virtual environment with the platform, the bundled plugins, export and test tools

serve: install  ## Migrate the SQLite default, export the bundled models, serve, print a demo key on first run
	$(BIN)/cloudeasyml db upgrade
	$(BIN)/cloudeasyml export
	$(BIN)/cloudeasyml serve --demo

test: install  ## The whole suite on $(TEST_WORKERS) workers; PostgreSQL tests run when CLOUDEASYML_TEST_POSTGRES_URL is set
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

fuzz: install  ## Only the fuzz tests (schemathesis on the OpenAPI document, hypothesis on the parsers); make test runs them too
	$(BIN)/python -m pytest -m fuzz

bench: install  ## Throughput and latency figures (see bench/README.md)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache
