# eventpipe — the two commands: `make demo` (run the pipeline) and `make test` (run the tests).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test up demo lint bench clean

## setup: create .venv and install eventpipe with its test extras (a fast no-op when up to date)
setup: $(STAMP)

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
	rm -rf $(VENV) .eventpipe .pytest_cache
