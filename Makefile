# pyrsia developer commands. The README names `make node` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
# Test modules run side by side: most of the suite waits on daemons, not on the CPU.
TEST_WORKERS ?= 4

.PHONY: node install tools test check lint typecheck check-completions completions man check-man sdist binary deb clean

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
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

check: lint typecheck check-completions check-man

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check pyrsia

typecheck:
	$(BIN)/mypy pyrsia

## binary: the single-file executable dist/pyrsia (PyInstaller --onefile)
binary: install
	$(BIN)/pyinstaller --onefile --noconfirm --clean --log-level WARN --name pyrsia \
	  --distpath dist --workpath build/pyinstaller --specpath build \
	  --paths $(CURDIR) --hidden-import _cffi_backend --collect-submodules shellingham --collect-data pyrsia.web \
	  $(CURDIR)/packaging/pyinstaller/pyrsia_main.py

## completions: regenerate completions/ (bash, zsh, fish) from the CLI
completions: install
	$(BIN)/python packaging/generate_completions.py completions

## check-completions: fail when completions/ differs from what the CLI generates now
check-completions: install
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT \
	  && $(BIN)/python packaging/generate_completions.py "$$tmp" \
	  && { diff -ru completions "$$tmp" || { echo "completions/ is stale: run make completions" >&2; exit 1; }; }

## man: regenerate packaging/man/pyrsia.1 (shipped in the sdist) from the CLI, dated by the last commit
man: install
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct) $(BIN)/python packaging/man/generate.py packaging/man/pyrsia.1

## check-man: fail when packaging/man/pyrsia.1 differs from what the CLI generates now
check-man: install
	$(BIN)/pytest -q -p no:cacheprovider tests/e2e/test_man_page.py::test_committed_page_is_what_the_cli_generates

## sdist: the release sdist dist/pyrsia-VERSION.tar.gz (man page and completions included)
sdist: install
	$(BIN)/pip install --quiet --target build/setuptools 'setuptools>=77'
	PYTHONPATH=build/setuptools $(BIN)/python -c "from setuptools import build_meta; build_meta.build_sdist('dist')"

## deb: the Debian package dist/pyrsia_VERSION_ARCH.deb (binary, systemd unit, completions, man page)
deb: binary completions
	PYTHON=$(CURDIR)/$(BIN)/python packaging/debian/build-deb.sh $$($(BIN)/python -c 'import pyrsia; print(pyrsia.__version__)')

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache
