"""A GGUF file written by SwiftQuant's GGUFWriter reads back bit-exactly with the `gguf` package's GGUFReader.

The Swift side writes the file: run
    SWIFTQUANT_GGUF_ROUNDTRIP_OUT=$PWD/.build/interop-roundtrip.gguf swift test --filter GGUFTests/testWriterRoundTrip
then
    SWIFTQUANT_GGUF_ROUNDTRIP_OUT=$PWD/.build/interop-roundtrip.gguf pytest python/tests/test_gguf_roundtrip.py
(`make test` does both.) The Swift test re-writes Tests/SwiftQuantTests/Fixtures/gguf_small.ggufbin (made by the gguf package) with
GGUFWriter; this test checks every metadata value and tensor against the original. Skips when the file or the
`gguf` package is missing.
"""
import os

import pytest

gguf = pytest.importorskip("gguf")
np = pytest.importorskip("numpy")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(ROOT, "Tests", "SwiftQuantTests", "Fixtures", "gguf_small.ggufbin")


def _swift_file():
    p = os.environ.get("SWIFTQUANT_GGUF_ROUNDTRIP_OUT")
    if not p or not os.path.exists(p):
        pytest.skip("SWIFTQUANT_GGUF_ROUNDTRIP_OUT not set or file missing (run the Swift test first)")
    return p


def test_swift_written_gguf_reads_back_bit_exact():
    ours = gguf.GGUFReader(_swift_file())
    ref = gguf.GGUFReader(FIXTURE)
    assert list(ours.fields.keys()) == list(ref.fields.keys())
    for k, f in ref.fields.items():
        g = ours.fields[k]
        assert g.types == f.types, k
        if k.startswith("GGUF."):
            continue
        a, b = f.contents(), g.contents()
        if isinstance(a, float):
            assert np.float64(a).tobytes() == np.float64(b).tobytes(), k
        else:
            assert a == b, k
    assert [t.name for t in ours.tensors] == [t.name for t in ref.tensors]
    for t, r in zip(ours.tensors, ref.tensors):
        assert t.tensor_type == r.tensor_type, t.name
        assert list(t.shape) == list(r.shape), t.name
        assert np.asarray(t.data).tobytes() == np.asarray(r.data).tobytes(), t.name
        d1 = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
        d2 = gguf.quants.dequantize(np.asarray(r.data), r.tensor_type)
        assert np.asarray(d1, dtype=np.float32).tobytes() == np.asarray(d2, dtype=np.float32).tobytes(), t.name
