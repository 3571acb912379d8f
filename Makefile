# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_ARGS ?=

.PHONY: demo test bench docs clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

# `make demo DEMO_ARGS=--quick` for the quick run (times measured: README "Set-up"); the report lands in
# unitscope-out/report.html
demo: $(STAMP)
	$(PY) -m unitscope demo $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest

# the documentation site (docs/, mkdocs.yml) → build/site/index.html; offline, warnings are errors
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

bench: $(STAMP)
	$(PY) bench/conductance.py

clean:
	rm -rf $(VENV) build src/*.egg-info
