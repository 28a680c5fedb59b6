# humanlm: `make run` sets everything up and serves the game; `make test` runs every test.
# Both are safe to repeat: finished work (install, migrations, import, scoring) is not redone.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run class setup install assets test lint bench clean

run: setup ## set up (idempotent) and serve the game on http://127.0.0.1:5000
	$(BIN)/humanlm serve

class: setup ## like run, but listening on every network interface: phones on the same network join
	HUMANLM_HOST=0.0.0.0 $(BIN)/humanlm serve

setup: install assets ## migrate the database, import and score the demo corpus
	$(BIN)/humanlm setup

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip wheel
	@echo "Installing Python packages (the first install compiles llama.cpp: ~8 minutes on 2 cores)..."
	$(BIN)/pip install -e ".[test,parquet,postgres,redis,analysis]"
	@# A llama.cpp compiled for instructions this CPU reports but refuses dies of SIGILL (132):
	@# rebuild it for any x86-64 CPU with AVX2 (webapp/lm/buildcheck.py says why).
	@$(BIN)/python -m webapp.lm.buildcheck; status=$$?; \
	if [ $$status -eq 132 ]; then \
		echo "llama.cpp was compiled for instructions this CPU refuses; rebuilding it for any x86-64 CPU with AVX2 (~8 minutes)..."; \
		version=$$($(BIN)/python -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))"); \
		CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/pip install --no-deps --no-cache-dir --force-reinstall "llama-cpp-python==$$version" \
			&& $(BIN)/python -m webapp.lm.buildcheck || exit 1; \
	elif [ $$status -ne 0 ]; then exit $$status; fi
	touch $(STAMP)

assets: static/node_modules/.package-lock.json ## front-end packages from static/package.json

static/node_modules/.package-lock.json: static/package.json static/package-lock.json
	cd static && npm ci --no-audit --no-fund

# The browser tests' Chromium (passed as HUMANLM_CHROMIUM): one already set, else /usr/bin/chromium,
# else Playwright's own (`playwright install chromium` downloads it once; needs a network).
test: install assets ## run the whole test suite (browser: /usr/bin/chromium, else Playwright's Chromium)
	@chromium="$${HUMANLM_CHROMIUM:-}"; \
	if [ -z "$$chromium" ] && [ -x /usr/bin/chromium ]; then chromium=/usr/bin/chromium; fi; \
	if [ -z "$$chromium" ]; then \
		echo "No /usr/bin/chromium: fetching Playwright's Chromium (python -m playwright install chromium)"; \
		$(BIN)/python -m playwright install chromium && chromium="$$($(BIN)/python -c \
			'from playwright.sync_api import sync_playwright as s; p = s().start(); print(p.chromium.executable_path); p.stop()')"; \
	fi; \
	if [ -z "$$chromium" ] || [ ! -x "$$chromium" ]; then \
		echo "Browser tests need Chromium: sudo apt-get install -y chromium (or go online so Playwright can download its own)"; exit 1; \
	fi; \
	echo "Browser tests use $$chromium"; \
	HUMANLM_CHROMIUM="$$chromium" $(BIN)/python -m pytest -q

lint:
	$(BIN)/ruff check webapp tests benchmarks analysis

bench: install ## benchmarks (slow; print ratios against a baseline measured in the same run)
	$(BIN)/python benchmarks/score_throughput.py
	$(BIN)/python benchmarks/room_fanout.py
	$(BIN)/python benchmarks/export_throughput.py
	$(BIN)/python benchmarks/analysis_speed.py

clean:
	rm -rf $(VENV) static/node_modules static/vendor
