# eventpipe — the two commands: `make demo` (run the pipeline) and `make test` (run the tests).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# web/: npm ci when the lock file changes, vite build when a source changes (both stamped, like the venv)
WEB_DEPS  := web/node_modules/.installed
WEB_BUILT := web/dist/.built
WEB_SRC   := $(shell find web/src -type f 2>/dev/null) web/index.html web/vite.config.ts web/tsconfig.json

.PHONY: setup web test up demo lint bench clean

## setup: create .venv, install eventpipe with its test extras, build the web UI (a fast no-op when up to date)
setup: $(STAMP) $(WEB_BUILT)

## web: install the UI's npm packages (npm ci) and build web/dist (served by the query service at /)
web: $(WEB_BUILT)

$(WEB_DEPS): web/package.json web/package-lock.json
	@command -v npm >/dev/null || { echo "make setup: Node >= 20 with npm is needed to build web/ (https://nodejs.org)"; exit 1; }
	cd web && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
	touch $@

$(WEB_BUILT): $(WEB_DEPS) $(WEB_SRC)
	cd web && npm run build
	touch $@

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -e '.[test]' --config-settings editable_mode=compat
	touch $(STAMP)

## test: set up, then run the whole test suite against real services started by the fixtures
test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## up: start the embedded stack in the foreground (Ctrl-C stops it)
up: setup
	$(BIN)/eventpipe up

## demo: set up and run the main job on the embedded stack (its own state dir, recreated on every run)
DEMO_HOME ?= .eventpipe/demo
demo: setup
	EVENTPIPE_HOME=$(DEMO_HOME) $(BIN)/eventpipe demo --reset $(DEMO_ARGS)

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .eventpipe .pytest_cache web/node_modules web/dist
