# `make run` and `make test` each set everything up on a fresh machine first.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test setup system-deps lint bench fixtures clean

run: setup
	$(BIN)/iris run

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy core storage bots
	$(BIN)/pytest

setup: system-deps $(STAMP)

# ffmpeg/ffprobe read voice notes; espeak-ng regenerates the test voice notes.
system-deps:
	@command -v ffprobe >/dev/null && command -v espeak-ng >/dev/null || \
	  ( $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends ffmpeg espeak-ng )

# llama-cpp-python compiles from source the first time (about 5 minutes on 2
# cores); pip caches the wheel after that.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

bench: setup
	$(BIN)/python bench/pipeline.py

fixtures:
	tests/fixtures/make_voice_notes.sh

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
