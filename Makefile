# Two commands do all the set-up: `make demo` runs a batch, `make test` runs the checks.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test lint chromium redis bench bench-memory clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "llmgather needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	@touch $@

demo: $(VENV)/.installed
	$(BIN)/python examples/demo.py

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

# The quick suite first (about 6 minutes), then the slow scale and crash tests (about 3 more).
test: lint chromium redis
	$(BIN)/pytest -m "not slow"
	$(BIN)/pytest -m slow

# The report test looks at the page in headless Chromium. As root (CI on a fresh Debian machine) this installs
# Debian's package; otherwise it says so, and that test is skipped.
chromium:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	else echo "chromium is missing and installing it needs root (make chromium as root): the browser test is skipped"; fi

# The Redis tests start their own redis-server on a free port. As root (CI on a fresh Debian machine) this
# installs Debian's package; otherwise it says so, and those tests fail naming it.
redis:
	@if command -v redis-server >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server; \
	else echo "redis-server is missing and installing it needs root (make redis as root): the Redis tests fail"; fi

bench: $(VENV)/.dev redis
	$(BIN)/python bench/run.py
	$(BIN)/python bench/limits.py
	$(BIN)/python bench/cache.py
	$(BIN)/python bench/anthropic_path.py
	$(BIN)/python bench/batch_routes.py
	$(BIN)/python bench/shared.py

bench-memory: $(VENV)/.dev
	$(BIN)/python bench/memory.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache results.jsonl
