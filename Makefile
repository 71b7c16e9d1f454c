# pyrsia developer commands. The README names `make node` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: node install tools test check lint typecheck pytest binary smoke-binary clean

## node: install pyrsia into .venv and start a node on http://127.0.0.1:7888 (Ctrl-C stops it)
node: install
	$(BIN)/pyrsia daemon

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

## tools: the system tools the tests drive (apt-get; needs root or sudo)
tools:
	.ci/install-tools

## test: everything CI runs — tools, lint, types, the single executable, all tests
test: tools install check binary
	$(BIN)/pytest $(PYTEST_ARGS)

check: lint typecheck

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check pyrsia

typecheck:
	$(BIN)/mypy pyrsia

## binary: the single-file executable dist/pyrsia (PyInstaller --onefile)
binary: install
	$(BIN)/pyinstaller --onefile --noconfirm --clean --log-level WARN --name pyrsia \
	  --distpath dist --workpath build/pyinstaller --specpath build \
	  --paths $(CURDIR) --hidden-import _cffi_backend --collect-submodules shellingham \
	  $(CURDIR)/packaging/pyinstaller/pyrsia_main.py

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache
