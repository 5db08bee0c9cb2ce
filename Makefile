# The two commands a new user needs: `make run` and `make test`. Both set up .venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
POSTGRES_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/test

.PHONY: setup run test lint typecheck imports docs pytest clean browser image-test

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "executor needs Python 3.11 or newer")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,docs,postgres,ray]'
	@rm -f $(VENV)/.installed-*
	@touch $@

run: setup
	$(BIN)/executor run

test: setup browser lint typecheck imports docs pytest image-test

# The dashboard test drives Debian's Chromium through Playwright (never a browser Playwright would
# download). Installed once with apt; on a machine that has it this is a single `test -x`.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
		echo "make: installing Debian's chromium for the dashboard test"; \
		if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
		$$sudo apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium >/dev/null; }

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy executor

imports:
	$(BIN)/lint-imports

# The reference site (mkdocs.yml): guides, the contract and the kit from their docstrings, and the
# settings table from the settings model. `make docs` builds it into site/ in strict mode (also a
# step of `make test`), so a broken reference, link or undocumented setting fails the tests.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# PostgreSQL tests run whenever the server answers; CI (.ci/run) makes sure it does.
pytest:
	@if [ -z "$$EXECUTOR_TEST_POSTGRES_URL" ] && $(BIN)/python -c 'import socket; socket.create_connection(("127.0.0.1", 5432), 1)' 2>/dev/null; then \
		export EXECUTOR_TEST_POSTGRES_URL='$(POSTGRES_URL)'; fi; \
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The Docker image and config/docker-compose.yml built and run for real, in a private Docker daemon
# that the test installs (Debian's docker.io), starts and stops (README: "make image-test"). About
# 2-3 minutes once its base images are cached in /var/cache/executor-image-test, 4-6 the first time.
# Needs root (sudo otherwise). A developer may skip it with EXECUTOR_SKIP_IMAGE_TEST=1; CI does not.
image-test: setup
	@if [ -n "$$EXECUTOR_SKIP_IMAGE_TEST" ]; then \
		echo "make: image-test skipped (EXECUTOR_SKIP_IMAGE_TEST is set)"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
	$$sudo $(BIN)/python tests/image/run.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache site

# Benchmarks print figures; they are not tests. `make bench` installs the bench-only extra (the
# Python peers, a profiler) and the Node.js peers (`npm ci` in bench/node, when npm is here), runs
# every scenario at full size (about 30 minutes on 2 cores) and rewrites BENCHMARKS.md;
# `make bench-smoke` runs each scenario once at a tiny size and writes nothing.
# PostgreSQL: postgres@127.0.0.1:5432/test when it answers, or BENCH_ARGS='--postgres-url URL'.
NODE_PEERS := bench/node/node_modules/.installed
.PHONY: bench bench-smoke bench-long
bench: setup $(NODE_PEERS)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,postgres,bench]'
	$(BIN)/python -m bench --output BENCHMARKS.md $(BENCH_ARGS)

# Without npm the Node.js peers are skipped, and the report says so.
$(NODE_PEERS): bench/node/package.json bench/node/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd bench/node && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "make: no npm here: scenario 7 runs without Graphile Worker and pg-boss"; fi

# `make bench-long`: the long run alone (ten minutes on PostgreSQL, autovacuum off on its tables;
# issue 21), printed, not written to BENCHMARKS.md. Not part of `make bench`.
bench-long: setup
	$(BIN)/python -m bench --only long-run $(BENCH_ARGS)

bench-smoke: setup
	$(BIN)/python -m bench --smoke $(BENCH_ARGS)
