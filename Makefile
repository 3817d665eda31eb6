# WISV testbed. `make demo` and `make test` each install everything first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install demo test bench clean snr-figure docs
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

# The README's SNR-sweep figure (simulated; deterministic with the shipped compute profiles).
snr-figure: install
	$(VENV)/bin/wisv run examples/snr_sweep.yaml --simulate -o runs/out/snr --overwrite
	mkdir -p docs/img
	cp runs/out/snr/plots/sweep_latency_ms_mean.png docs/img/snr_latency.png
	cp runs/out/snr/plots/sweep_mean_accepted_len.png docs/img/snr_accepted_len.png
	cp runs/out/snr/plots/sweep_up_bytes_per_token.png docs/img/snr_up_bytes.png

# The spec key reference, generated from the schema.
docs: install
	$(VENV)/bin/wisv run --schema > docs/spec.md
