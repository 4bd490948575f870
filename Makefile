# The two commands: `make demo` and `make test`. Each sets up .venv first (once).
VENV ?= .venv
PY := $(VENV)/bin/python
export VENV

.PHONY: setup test demo bench clean

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest

demo: setup
	@bash scripts/demo.sh

bench: setup
	$(PY) scripts/bench/run_all.py

clean:
	rm -rf $(VENV) out
