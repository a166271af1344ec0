#!/usr/bin/env python3
"""Writes the GGUF parity fixtures used by GGUFTests (run by hand, never in CI).

    python -m venv venv && venv/bin/pip install gguf numpy
    venv/bin/python Tests/SwiftQuantTests/Fixtures/make_gguf_fixtures.py [--smollm2 PATH_TO_SmolLM2-135M-Instruct.Q4_1.gguf]

Outputs (next to this script):
  gguf_small.ggufbin              a GGUF file (the extension keeps it apart from *.gguf model weights, which are
                                  never committed), written by gguf.GGUFWriter: metadata of every value type, F32/F16/BF16/Q8_0/Q4_0/
                                  Q4_1 tensors (random data plus edge values) and llama-style q/k tensors whose rows
                                  were permuted the way llama.cpp's converter does.
  gguf_small_expected.safetensors expected float32 data from gguf.quants.dequantize (name = GGUF tensor name),
                                  "hf:<name>" = the un-permuted HF matrices, and for the encoder check
                                  "enc_in" (float32 input) with "enc:<TYPE>" (bytes from gguf.quants.quantize).
  smollm2_expected.json           (with --smollm2) tensor count, a few names/shapes and checksums of the
                                  dequantized tensors of the real SmolLM2-135M Q4_1 file.

The checksum is over the float32 bit patterns b[i] as uint32: sum_i b[i] * (i % 65521 + 1) mod 2^64.
"""
import argparse
import json
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

HERE = os.path.dirname(os.path.abspath(__file__))


def checksum(a: np.ndarray) -> int:
    bits = np.ascontiguousarray(a, dtype=np.float32).reshape(-1).view(np.uint32).astype(np.uint64)
    w = (np.arange(bits.size, dtype=np.uint64) % np.uint64(65521)) + np.uint64(1)
    with np.errstate(over="ignore"):
        return int(np.sum(bits * w, dtype=np.uint64))


def hf_to_gguf_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    # llama.cpp converter's permutation: [n_head, 2, hd/2, in] -> swap axes 1, 2 -> back
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
             .swapaxes(1, 2).reshape(w.shape))


def write_safetensors(path, tensors):
    """Minimal safetensors writer (float32 / uint8), so no torch/safetensors dependency is needed."""
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        dt = {np.dtype(np.float32): "F32", np.dtype(np.uint8): "U8"}[arr.dtype]
        b = arr.tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, sort_keys=True).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


def small():
    rng = np.random.default_rng(1234)
    expected = {}
    w = gguf.GGUFWriter(os.path.join(HERE, "gguf_small.ggufbin"), "llama")
    w.add_uint32("llama.attention.head_count", 2)
    w.add_uint32("llama.attention.head_count_kv", 1)
    w.add_uint8("test.u8", 250)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 65000)
    w.add_int16("test.i16", -32000)
    w.add_int32("test.i32", -2_000_000_000)
    w.add_float32("test.f32", 1.5)
    w.add_bool("test.bool", True)
    w.add_string("test.str", "héllo\nworld")
    w.add_uint64("test.u64", 2**63 + 5)
    w.add_int64("test.i64", -(2**62))
    w.add_float64("test.f64", -0.1)
    w.add_array("test.arr_str", ["a", "", "ünï"])
    w.add_array("test.arr_i32", [1, -2, 3])
    w.add_array("test.arr_nested", [[1, 2], [3]])

    def rand(shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    # plain types (HF shape [rows, cols]; GGUF dims are reversed)
    f = rand((4, 64))
    f[0, :8] = [0.0, -0.0, 65504.0, 2.0**-24, np.inf, -np.inf, np.nan, 1e-40]
    for name, qt in [("plain.f32", T.F32), ("plain.f16", T.F16), ("plain.bf16", T.BF16)]:
        data = gguf.quants.quantize(f, qt)
        w.add_tensor(name, data, raw_dtype=qt)
        expected[name] = gguf.quants.dequantize(data, qt).astype(np.float32)

    # block types; edge blocks: all zero, constant, single outlier, negative max, tiny values
    q = rand((8, 64), 0.05)
    q[0, :32] = 0.0
    q[0, 32:] = 0.25
    q[1, :32] = 0.0
    q[1, 5] = 7.5
    q[1, 32:] = -np.linspace(0, 3, 32, dtype=np.float32)
    q[2, :32] = 1e-6 * np.arange(32, dtype=np.float32)
    q[3] *= 1000.0
    for name, qt in [("quant.q8_0", T.Q8_0), ("quant.q4_0", T.Q4_0), ("quant.q4_1", T.Q4_1)]:
        data = gguf.quants.quantize(q, qt)
        w.add_tensor(name, data, raw_dtype=qt)
        expected[name] = gguf.quants.dequantize(data, qt).astype(np.float32)

    # llama-style attention tensors: HF matrices stored with the converter's row permutation
    hidden, n_head, n_kv = 64, 2, 1
    hd = hidden // n_head
    for gname, hfname, rows, heads, qt in [
        ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", hidden, n_head, T.F32),
        ("blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight", n_kv * hd, n_kv, T.Q8_0),
        ("blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight", n_kv * hd, n_kv, T.F16),
    ]:
        hf = rand((rows, hidden))
        stored = hf if "attn_v" in gname else hf_to_gguf_rows(hf, heads)
        data = gguf.quants.quantize(np.ascontiguousarray(stored), qt)
        w.add_tensor(gname, data, raw_dtype=qt)
        deq = gguf.quants.dequantize(data, qt).astype(np.float32).reshape(rows, hidden)
        expected[gname] = deq
        # expected HF view: undo the permutation of the dequantized rows
        if "attn_v" in gname:
            expected["hf:" + hfname] = deq
        else:
            expected["hf:" + hfname] = (deq.reshape(heads, hd // 2, 2, hidden).swapaxes(1, 2).reshape(rows, hidden))
    norm = rand((hidden,))
    w.add_tensor("blk.0.attn_norm.weight", norm)
    expected["blk.0.attn_norm.weight"] = norm
    w.add_tensor("token_embd.weight", rand((10, hidden)))
    w.add_tensor("output_norm.weight", rand((hidden,)))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # Encoder parity input/outputs
    enc = rand((4, 64), 0.5)
    enc[0, :32] = 0.0
    enc[1, 3] = -4.0
    enc[2, :32] = 0.3
    expected["enc_in"] = enc
    for qt in (T.Q8_0, T.Q4_0, T.Q4_1, T.F16, T.BF16):
        expected["enc:" + qt.name] = np.ascontiguousarray(gguf.quants.quantize(enc, qt)).view(np.uint8).reshape(-1)

    write_safetensors(os.path.join(HERE, "gguf_small_expected.safetensors"), expected)


def smollm2(path):
    r = gguf.GGUFReader(path)
    out = {"tensor_count": len(r.tensors), "tensors": {}}
    picks = ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.ffn_down.weight",
             "blk.0.attn_norm.weight", "blk.29.mlp_up.weight", "blk.29.ffn_up.weight", "output_norm.weight"]
    for t in r.tensors:
        if t.name not in picks:
            continue
        deq = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32).reshape(-1)
        out["tensors"][t.name] = {
            "type": t.tensor_type.name,
            "dims": [int(x) for x in t.shape],  # GGUF order, innermost first
            "checksum": str(checksum(deq)),
            "first": [float(x) for x in deq[:8]],
        }
    out["names_sample"] = [t.name for t in r.tensors[:10]]
    with open(os.path.join(HERE, "smollm2_expected.json"), "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--smollm2", help="path to SmolLM2-135M-Instruct.Q4_1.gguf")
    a = ap.parse_args()
    small()
    if a.smollm2:
        smollm2(a.smollm2)
