"""A safetensors file written by SwiftQuant's SafetensorsWriter loads with the `safetensors` package.

    SWIFTQUANT_SAFETENSORS_OUT=$PWD/.build/interop-roundtrip.safetensors swift test --filter SafetensorsTests/testRoundTripEveryDType
    SWIFTQUANT_SAFETENSORS_OUT=$PWD/.build/interop-roundtrip.safetensors pytest python/tests/test_safetensors_interop.py

Skips when the file or the `safetensors` package is missing.
"""
import os

import pytest

np = pytest.importorskip("numpy")
safetensors = pytest.importorskip("safetensors")


def test_swift_written_safetensors_loads():
    p = os.environ.get("SWIFTQUANT_SAFETENSORS_OUT")
    if not p or not os.path.exists(p):
        pytest.skip("SWIFTQUANT_SAFETENSORS_OUT not set or file missing (run the Swift test first)")
    expected_dtypes = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
                       "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
    with safetensors.safe_open(p, framework="numpy") as f:
        assert f.metadata() == {"format": "pt", 'quote"key': "line\nbreak"}
        assert set(f.keys()) == {"t." + k for k in expected_dtypes} | {"t.BF16", "empty", "scalar"}
        for k, dt in expected_dtypes.items():
            a = f.get_tensor("t." + k)
            assert a.dtype == dt and a.shape == (3, 5), k
        # NumPy has no bfloat16: check the declared type and shape only.
        s = f.get_slice("t.BF16")
        assert s.get_dtype() == "BF16" and list(s.get_shape()) == [3, 5]
        assert f.get_tensor("empty").shape == (0, 4)
        sc = f.get_tensor("scalar")
        assert sc.shape == () and float(sc) == 2.5
