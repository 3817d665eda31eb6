# WISV testbed. `make demo` and `make test` each install everything first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install demo test bench clean
install:
	bash scripts/install.sh

demo: install
	$(VENV)/bin/wisv demo

test: install
	$(PY) -m pytest -q -ra $(PYTEST_ARGS) tests

bench: install
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf runs/out .pytest_cache
