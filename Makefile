# GNU make. `make demo` trains the tiny model on synthetic shapes; `make test` checks the import
# contracts (.importlinter) and runs the tests, `make test-fast` the contracts and all but the
# slow tests.

# Python 3.11 is what setup.py supports; plain python3 is the fallback when 3.11 is absent.
PYTHON ?= $(if $(shell command -v python3.11),python3.11,python3)
VENV := .venv
BIN := $(VENV)/bin
# Stamps record the last install, so installs rerun only when setup.py changes.
INSTALLED := $(VENV)/installed.stamp
TEST_INSTALLED := $(VENV)/test-installed.stamp

.PHONY: $(VENV) browser demo test test-fast lint-imports

$(VENV): $(INSTALLED)

$(INSTALLED): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e .
	touch $@

$(TEST_INSTALLED): $(INSTALLED)
	$(BIN)/python -m pip install -e ".[test,torch,serve]"
	touch $@

demo: $(INSTALLED)
	$(BIN)/keras-maskrcnn demo --out outputs/demo

# import-linter's lint-imports over keras_maskrcnn/ and export/ (docs/design.md §2.2).
lint-imports: $(TEST_INSTALLED)
	$(BIN)/python tools/lint_imports.py

# The serve page's browser test drives Debian's Chromium; apt-get installs it when missing
# (through sudo unless root).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ $(SUDO) apt-get update && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; }

# The suite runs in TEST_WORKERS processes (pytest-xdist), a test file (or a group of files
# that share fixtures: tests/conftest.py) to a process, so that fixtures are built once; each
# process gives TensorFlow (and torch, through OpenMP) one thread per op, since two processes
# already fill the 2 cores this project's machines have (docs/design.md §9).
TEST_WORKERS ?= 2
PYTEST := TF_NUM_INTRAOP_THREADS=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test: lint-imports browser
	$(PYTEST) tests

# The inner loop: everything but the tests marked slow (pytest.ini).
test-fast: lint-imports
	$(PYTEST) -m "not slow" tests
