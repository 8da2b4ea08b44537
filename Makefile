PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: test demo bench lint typecheck clean oracle

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
	@$(PY) samples/build.py --check
	@for exe in samples/bin/*.exe; do \
		echo; echo "=== emulator-mem run $$exe"; \
		$(PY) -m emulator_mem.cli run $$exe; status=$$?; \
		[ $$status -le 1 ] || exit $$status; \
	done
	@mkdir -p build
	@echo; echo "=== emulator-mem run samples/bin/unpack32.exe --report build/unpack32-report.html"
	@$(PY) -m emulator_mem.cli run samples/bin/unpack32.exe --report build/unpack32-report.html > /dev/null
	@echo "HTML report (address-space map, history, totals): $(CURDIR)/build/unpack32-report.html"
	@echo; echo "=== emulator-mem vmmap --run samples/bin/uart64.exe"
	@$(PY) -m emulator_mem.cli vmmap --run samples/bin/uart64.exe
	@mkdir -p build
	@echo; echo "=== snapshot stack32 after 3000 instructions, then resume it in a new process"
	@$(PY) -m emulator_mem.cli run samples/bin/stack32.exe --snapshot-at 3000 \
		--snapshot-out build/stack32.snap > /dev/null
	@$(PY) -m emulator_mem.cli snapshot info build/stack32.snap
	@$(PY) -m emulator_mem.cli run --resume build/stack32.snap
	@echo; echo "=== batch: every sample at once, 2 local workers"
	@$(PY) -m emulator_mem.cli batch samples/bin/*.exe --workers 2 --out build/samples.jsonl
	@echo; echo "=== batch: parse32 snapshotted where it reads its input, 40 generated inputs, 2 workers"
	@rm -rf build/corpus && $(PY) samples/corpus.py build/corpus
	@$(PY) -m emulator_mem.cli run samples/bin/parse32.exe --max-instructions 15 --snapshot-at 15 \
		--snapshot-out build/parse32.snap > /dev/null; [ $$? -eq 3 ]
	@$(PY) -m emulator_mem.cli batch --snapshot build/parse32.snap --inputs build/corpus \
		--input-at 'parse32.exe!input' --input-len-at 'parse32.exe!input_len' --input-max 4096 \
		--timeout 10 --workers 2 --out build/parse32.jsonl
	@echo "one of the inputs that reach the bug:"
	@grep -m1 '"outcome":"exception"' build/parse32.jsonl

# Rebuild the Wine oracle (tests/oracle): compile the C programs with mingw-w64, run each
# under Wine twice and record the output. Needs gcc-mingw-w64-i686, gcc-mingw-w64-x86-64,
# wine64 and wine32:i386 (Debian); `make test` only needs the committed results.
oracle:
	@command -v i686-w64-mingw32-gcc >/dev/null && command -v x86_64-w64-mingw32-gcc >/dev/null || \
		{ echo "make oracle: needs gcc-mingw-w64-i686 and gcc-mingw-w64-x86-64 (apt-get install)"; exit 1; }
	@command -v wine >/dev/null || \
		{ echo "make oracle: needs wine64 and wine32:i386 (dpkg --add-architecture i386; apt-get install wine64 wine32:i386)"; exit 1; }
	tests/oracle/build.sh
	tests/oracle/record.sh

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf .venv .mypy_cache .pytest_cache .ruff_cache
