# The two set-up commands of the README. Each creates .venv when needed.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test clean

# A .venv that is half made (python3-venv was missing: no pip), of an older Python, or whose
# interpreter is gone is made again.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "seld needs Python >= 3.11, $(PYTHON) is " + sys.version.split()[0] + ": run make with PYTHON=python3.12 (or another)")'
	@$(VENV)/bin/python -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null && $(VENV)/bin/python -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/python -m seld.demo --out demo_out

test: $(STAMP)
	$(VENV)/bin/pytest -q

clean:
	rm -rf $(VENV) demo_out
