# Two commands set everything up on a fresh machine:
#   make test   create .venv, install densir with its test extras, run the test suite
#   make demo   create .venv, install, run the whole pipeline on SciFact (see README)
#   make demo-rerank   the demo plus rerank.sh (cross-encoder on round 2's top 100; skips what make demo did)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is named in the same pip command: a bare 'torch' requirement would pull CUDA wheels
TORCH  ?= torch==2.13.0
EXTRAS ?= cpu,test
STAMP  := $(VENV)/.densir-installed
PYTEST_ARGS ?=
# pytest-xdist workers (tests/conftest.py keeps each test file, and the files that share costly fixtures,
# on one worker, longest first); PYTEST_WORKERS=0 runs the suite in this process
PYTEST_WORKERS ?= 2
XDIST = -n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder

.PHONY: install constraints chromium test test-fast demo demo-rerank clean

install: $(STAMP)

# constraints.txt: the exact versions the test suite last passed with (make constraints rewrites it),
# so every fresh install repeats; setup.py itself stays loosely pinned for users' own environments
CONSTRAINTS ?= constraints.txt

$(STAMP): setup.py $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" -e ".[$(EXTRAS)]" -c $(CONSTRAINTS)
	touch $(STAMP)

# after a green `make test`: record the venv's versions (torch is named by TORCH, densir is the checkout)
constraints: install
	$(PY) -m pip freeze --exclude-editable | grep -v -i -E '^(torch|densir|pip|setuptools)==| @ ' > $(CONSTRAINTS).tmp
	mv $(CONSTRAINTS).tmp $(CONSTRAINTS)

# Debian's chromium, for the search page's browser test (tests/test_serve_page.py, playwright drives it);
# skipped when present, and where apt-get or root is missing (that test then skips, saying why)
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } || \
	      echo "chromium could not be installed: the browser test will skip"; \
	  else echo "no apt-get or not root: chromium not installed, the browser test will skip"; fi; }

# ruff first (pyproject.toml's settings): a lint error fails the suite before any test runs
test: install chromium
	$(PY) -m ruff check .
	$(PY) -m pytest -ra $(XDIST) $(PYTEST_ARGS) tests

test-fast: install chromium
	$(PY) -m pytest -ra -m "not slow" $(XDIST) $(PYTEST_ARGS) tests

demo: install
	PATH="$(abspath $(VENV))/bin:$$PATH" bash demo.sh

demo-rerank: install
	PATH="$(abspath $(VENV))/bin:$$PATH" RERANK=1 bash demo.sh

clean:
	rm -rf $(VENV) *.egg-info
