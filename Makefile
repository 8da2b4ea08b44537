PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: test demo bench lint typecheck clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check emulator_mem tests hooks samples bench

typecheck: $(STAMP)
	$(PY) -m mypy --strict emulator_mem

test: lint typecheck
	$(PY) -m pytest

demo: $(STAMP)
	$(PY) -m emulator_mem.demo

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) bench/run_all.py

clean:
	rm -rf .venv .mypy_cache .pytest_cache .ruff_cache
