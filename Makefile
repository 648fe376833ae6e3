# `make run` and `make test` each set everything up on a fresh machine first.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
RUN_STAMP  := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test setup system-deps lint bench fixtures clean

run: $(RUN_STAMP)
	$(BIN)/iris run

test: lint
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy core storage bots

setup: system-deps $(TEST_STAMP)

# The bot itself needs no Debian package (PyAV bundles FFmpeg); espeak-ng and
# ffmpeg make the test voice notes (make fixtures).
system-deps:
	@command -v ffprobe >/dev/null && command -v espeak-ng >/dev/null || \
	  ( $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends ffmpeg espeak-ng )

# llama-cpp-python compiles from source the first time (about 5 minutes on 2
# cores); pip caches the wheel after that. The tests also train (CPU torch,
# pinned to the build this machine has on disk: a looser pin pulls CUDA).
$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(RUN_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install -q -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install -q -e '.[dev,train-cpu]'
	touch $@ $(RUN_STAMP)

bench: setup
	$(BIN)/python bench/pipeline.py

fixtures:
	tests/fixtures/make_voice_notes.sh

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
