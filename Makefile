# The two commands of the README:
#   make demo   set up everything, start the built-in lab, run every stage with --apply, write the report
#   make test   set up everything and run the whole test suite
# Both create .venv here from the pinned requirements.lock and, when run as root, install the Debian
# packages the lab and the tests need (non-interactive, idempotent). The lock installs with -qq: errors
# only, since this machine's pip index warns about every find-links folder it lacks.

VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
RUNBOOK   := $(VENV)/bin/runbook

.PHONY: demo test bench setup system-packages lint lab-down

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml lab/pyproject.toml
	@command -v python3 >/dev/null || { echo "python3 (3.11+) is required"; exit 2; }
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -qq -r requirements.lock
	$(PY) -m pip install -q --no-deps -e . -e lab
	@touch $(STAMP)

system-packages:
	@bash scripts/system-packages.sh

demo: system-packages setup
	$(RUNBOOK) lab up
	@rc=0; $(RUNBOOK) run --params parameters/lab.yaml --apply --note "make demo" || rc=$$?; \
	  $(RUNBOOK) report; \
	  echo "The lab keeps running (explore it, e.g. $(VENV)/bin/jupyter lab runbook_lib/notebooks/); stop it with: $(RUNBOOK) lab down"; \
	  exit $$rc

test: system-packages setup
	@bash scripts/test.sh

# Benchmarks (not the test suite): bench/results.json, bench/results.md and the README's Performance table.
bench: system-packages setup
	$(PY) -m bench.run

lint: setup
	$(VENV)/bin/ruff check runbook_lib lab tests bench
	$(VENV)/bin/ruff format --check runbook_lib lab tests bench

lab-down:
	$(RUNBOOK) lab down
