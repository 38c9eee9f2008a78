# One virtual environment for development and tests; each image installs only its own packages.
PYTHON   ?= python3
VENV     ?= .venv
PY       := $(VENV)/bin/python
VERSION  := $(shell cat VERSION)
RUNTIMES := $(patsubst %/,%,$(dir $(wildcard runtimes/*/pyproject.toml)))
TEST_REQUIREMENTS := $(wildcard tests/*/requirements.txt)
PORT     ?= 8080

.PHONY: help setup serve test bench set-version clean

help:
	@echo "make serve   - serve the example iris model on :$(PORT)"
	@echo "make test    - run the test suite"
	@echo "make bench   - load-test the example model (req/s, p50/p99)"

setup: $(VENV)/.setup-done

# Editable installs of every package, the test requirements of every suite, then each suite's
# setup script for what pip cannot install (storage emulators, ...).
$(VENV)/.setup-done: VERSION storage/pyproject.toml $(addsuffix /pyproject.toml,$(RUNTIMES)) \
		requirements-dev.txt $(TEST_REQUIREMENTS) $(wildcard tests/*/setup.sh)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt $(addprefix -r ,$(TEST_REQUIREMENTS)) \
		-e 'storage[all]' $(addprefix -e ,$(RUNTIMES))
	for script in $(wildcard tests/*/setup.sh); do bash $$script || exit 1; done
	touch $@

serve: setup
	@echo "Serving examples/sklearn-iris as 'iris' on :$(PORT). Try:"
	@echo "  curl -s localhost:$(PORT)/v1/models/iris:predict -d '{\"instances\": [[6.8, 2.8, 4.8, 1.4]]}'"
	$(PY) -m sklearnserver --model_name iris --model_dir examples/sklearn-iris --http_port $(PORT)

test: setup
	$(PY) -m pytest tests

bench: setup
	$(PY) benchmarks/bench.py

# Writes VERSION into every package's pyproject.toml: `make set-version VERSION=0.2.0`.
set-version:
	echo $(VERSION) > VERSION
	sed -i 's/^version = "[^"]*"/version = "$(VERSION)"/' storage/pyproject.toml \
		$(addsuffix /pyproject.toml,$(RUNTIMES))

clean:
	rm -rf $(VENV) .pytest_cache
