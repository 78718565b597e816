# GNU make. `make demo` trains the tiny model on synthetic shapes; `make test` runs the tests,
# `make test-fast` all but the slow ones.

# Python 3.11 is what setup.py supports; plain python3 is the fallback when 3.11 is absent.
PYTHON ?= $(if $(shell command -v python3.11),python3.11,python3)
VENV := .venv
BIN := $(VENV)/bin
# Stamps record the last install, so installs rerun only when setup.py changes.
INSTALLED := $(VENV)/installed.stamp
TEST_INSTALLED := $(VENV)/test-installed.stamp

.PHONY: $(VENV) demo test test-fast

$(VENV): $(INSTALLED)

$(INSTALLED): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e .
	touch $@

$(TEST_INSTALLED): $(INSTALLED)
	$(BIN)/python -m pip install -e ".[test,torch]"
	touch $@

demo: $(INSTALLED)
	$(BIN)/keras-maskrcnn demo --out outputs/demo

test: $(TEST_INSTALLED)
	$(BIN)/python -m pytest -q tests

# The inner loop: everything but the tests marked slow (pytest.ini).
test-fast: $(TEST_INSTALLED)
	$(BIN)/python -m pytest -q -m "not slow" tests
