# The README's two commands: `make book` and `make test`. Each creates .venv and installs what it needs.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PRESET ?= smoke

.PHONY: book test lint install clean help

help:
	@echo "make book   - install, execute every notebook at the smoke preset, build the HTML book"
	@echo "make test   - install, lint with ruff, run the test suite"
	@echo "make clean  - remove the built book and the run folders"

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3"
	$(PY) -m xaiutils setup-weights
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) lint
	$(PY) -m pytest

book: $(STAMP)
	$(VENV)/bin/jupyter-book build . --builder html
	@echo "Book built: $(CURDIR)/_build/html/index.html"

clean:
	rm -rf _build runs
