# The README's two commands: `make book` and `make test`. Each creates .venv and installs what it needs.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: book test test-isa lint install clean help browser check-book anatomy

help:
	@echo "make book   - install, execute every notebook at the book preset, build the HTML book"
	@echo "make test   - install (Chromium too, via make browser), lint (ruff, lint-imports), run the test suite"
	@echo "make test-isa - the test suite again with PyTorch and oneDNN forced to AVX2 and to generic code (ISA=avx2|generic: one)"
	@echo "make check-book - open the built book in headless Chromium; fail on blank pages, missing figures, broken links"
	@echo "make browser    - apt-get install chromium and chromium-driver when missing (the browser tests need them)"
	@echo "make anatomy    - unpack Debian's mricron-data (Colin27, AAL) into .venv (in-domain pre-training needs it)"
	@echo "make clean  - remove the built book and the run folders"

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3"
	$(PY) -m xaiutils setup-weights
	touch $(STAMP)

# The Colin27 brain and the AAL atlas (in-domain pre-training, xaiutils/domain/mri/anatomies.py): Debian's
# mricron-data package, downloaded with apt-get and unpacked into the virtual environment (no root needed).
ANATOMY := $(VENV)/share/mricron/templates/ch2.nii.gz

$(ANATOMY): | $(STAMP)
	$(PY) -m xaiutils setup-anatomy

anatomy: $(ANATOMY)

install: $(STAMP)

# Test-only packages (Quantus, for tests/test_quantus_metric.py), exact pins, installed with --no-deps so that no pin
# of requirements.txt can move: requirements-test.txt lists every package they need that the book does not have.
$(TEST_STAMP): $(STAMP) requirements-test.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-test.txt
	touch $(TEST_STAMP)

# ruff, then the import contract of pyproject.toml ([tool.importlinter]: the package's layers, no import cycles).
lint: $(STAMP) $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

test: $(STAMP) $(TEST_STAMP) lint browser $(ANATOMY)
	$(PY) -m pytest

# Floating-point results differ between CPUs (AVX-512, AVX2, generic code paths round differently), so no test may
# depend on the machine it was written on. These variables make PyTorch (ATen), oneDNN and NumPy's dispatched loops
# run another CPU's code paths on this one (features a CPU lacks are ignored); the suite must pass under each.
# ISA=avx2 or ISA=generic runs one of them. benchmarks/cross_build.py builds the book under the same settings.
ISA ?= avx2 generic
ISA_ENV_avx2 := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 NPY_DISABLE_CPU_FEATURES=X86_V4,AVX512_ICL,AVX512_SPR
ISA_ENV_generic := ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 \
	NPY_DISABLE_CPU_FEATURES=X86_V3,X86_V4,AVX512_ICL,AVX512_SPR

test-isa: $(STAMP) $(TEST_STAMP) browser $(ANATOMY)
	@for isa in $(ISA); do \
		case $$isa in avx2) env="$(ISA_ENV_avx2)";; generic) env="$(ISA_ENV_generic)";; \
			*) echo "test-isa: unknown ISA '$$isa'; valid: avx2 generic" >&2; exit 2;; esac; \
		echo "== pytest with $$env"; \
		env $$env $(PY) -m pytest -p no:cacheprovider -q || exit 1; \
	done

# --all: every page is read and so every notebook executed again, even when only xaiutils changed.
# -W: a warning fails the build (with --keep-going, after listing them all). A glue reference whose value is
# missing or cannot be formatted is only a warning otherwise, and the prose would silently lose its number.
# build-book holds _build/.html.lock while jupyter-book runs: a second `make book` in this checkout is refused at once.
book: $(STAMP) $(ANATOMY)
	$(PY) -m xaiutils build-book -- $(VENV)/bin/jupyter-book build . --builder html --all -W --keep-going
	@echo "Book built: $(CURDIR)/_build/html/index.html"

# Debian's chromium + chromium-driver, for tests/test_bookcheck.py and check-book. Selenium is given both paths
# (xaiutils/bookcheck.py), so it never downloads a driver. sudo only when not already root.
CHROMIUM := /usr/bin/chromium
CHROMEDRIVER := /usr/bin/chromedriver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser:
	@if [ -x $(CHROMIUM) ] && [ -x $(CHROMEDRIVER) ]; then \
		echo "browser: $$($(CHROMIUM) --version 2>/dev/null)"; \
	elif ! command -v apt-get >/dev/null; then \
		echo "browser: no apt-get here; install Chromium and chromedriver at $(CHROMIUM) and $(CHROMEDRIVER)" \
			"(the browser tests skip without them, and fail under CI=true)" >&2; \
	else \
		$(SUDO) apt-get update && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver; \
	fi

# Needs a built book (`make book`); does not rebuild it. Screenshots go to _build/screenshots.
check-book: $(STAMP) browser
	$(PY) -m xaiutils check-book _build/html --screenshots _build/screenshots

clean:
	rm -rf _build runs
