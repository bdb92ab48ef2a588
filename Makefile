# Two entry points: `make demo` runs the demo workflow, `make test` the test suite.
# Both create .venv when needed and install the project into it; `make test` adds the test tools and
# the SLURM executor (the extra "dev"), `make slurm` the SLURM executor alone (the extra "slurm", for a
# cluster's login node). A local run goes without it: its import (pandas) costs every Snakemake start 0.3 s.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medsynth-installed

.PHONY: demo test slurm lint clean-results

demo: $(STAMP)
	$(BIN)/snakemake --cores all

test: $(VENV)/.medsynth-dev-installed
	$(BIN)/python -m pytest

slurm: $(VENV)/.medsynth-slurm-installed

lint: $(STAMP)
	$(BIN)/snakemake --lint

# Reinstall when the dependency list changes.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 is required (found $$($(PYTHON) --version))"; exit 1; }
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { echo "installing python3-venv"; apt-get update -q && apt-get install -y -q python3-venv; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

# An extra on top of the base install: again when the base is reinstalled (pyproject.toml changed).
$(VENV)/.medsynth-%-installed: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[$*]'
	touch $@

clean-results:
	rm -rf resources results logs benchmarks reports .snakemake
