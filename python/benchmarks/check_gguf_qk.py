"""Independent check of transformers' GGUF q/k un-permutation for SmolLM2-135M (layer 0 attention scores).
(a) HF: transformers' q_proj/k_proj + HF RoPE (rotate_half, pairs (i, i+32)).
(b) raw GGUF tensors dequantized with the gguf package, NOT un-permuted, + llama.cpp's RoPE
    (adjacent pairs (2i, 2i+1)), which is what llama.cpp itself runs on these weights.
The q.k scores must agree; with the permutation applied wrongly they would not.
Run: python python/benchmarks/check_gguf_qk.py [model.gguf]   (needs torch, transformers, gguf, accelerate)"""
import os, sys, numpy as np, torch
torch.set_num_threads(1)
import gguf
from transformers import AutoModelForCausalLM, AutoTokenizer
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_eval import DEFAULT_TEXT, default_model_path
path = sys.argv[1] if len(sys.argv) > 1 else default_model_path()
d, f = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
r = gguf.GGUFReader(os.path.join(d, f))
T = {t.name: t for t in r.tensors}
def deq(name):
    t = T[name]
    return np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(list(reversed([int(x) for x in t.shape])))
emb, norm = deq("token_embd.weight"), deq("blk.0.attn_norm.weight")
wq, wk = deq("blk.0.attn_q.weight"), deq("blk.0.attn_k.weight")
print("gguf shapes", emb.shape, wq.shape, wk.shape, {n: T[n].tensor_type.name for n in ["token_embd.weight", "blk.0.attn_q.weight"]})
m = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
text = open(DEFAULT_TEXT, encoding="utf-8").read()[:2000]
ids = np.array(tok(text).input_ids[:64])
hq, hk = m.model.layers[0].self_attn.q_proj.weight.detach().numpy(), m.model.layers[0].self_attn.k_proj.weight.detach().numpy()
def unpermute(w, nh):
    dim = w.shape[0] // nh // 2
    return w.reshape(nh, dim, 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)
print("HF q_proj == raw gguf q (permuted)? max|diff| =", np.abs(hq - wq).max())
print("HF q_proj == own unpermute(raw q)? max|diff| =", np.abs(hq - unpermute(wq, 9)).max())
print("HF k_proj == own unpermute(raw k)? max|diff| =", np.abs(hk - unpermute(wk, 3)).max())
eps, theta, hd = m.config.rms_norm_eps, 100000.0, 64
x = emb[ids].astype(np.float64)
x = x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * norm
pos = np.arange(len(ids))[:, None]
inv = theta ** (-np.arange(0, hd, 2) / hd)          # 32 freqs
ang = pos * inv                                     # [T, 32]
cos, sin = np.cos(ang), np.sin(ang)
def rope_half(v):   # HF: pairs (i, i+32)
    a, b = v[..., :32], v[..., 32:]
    return np.concatenate([a * cos[:, None] - b * sin[:, None], b * cos[:, None] + a * sin[:, None]], -1)
def rope_adj(v):    # llama.cpp normal mode: pairs (2i, 2i+1)
    a, b = v[..., 0::2], v[..., 1::2]
    out = np.empty_like(v); out[..., 0::2] = a * cos[:, None] - b * sin[:, None]; out[..., 1::2] = b * cos[:, None] + a * sin[:, None]
    return out
def scores(Wq, Wk, rope):
    q = rope((x @ Wq.T.astype(np.float64)).reshape(len(ids), 9, hd))
    k = rope((x @ Wk.T.astype(np.float64)).reshape(len(ids), 3, hd))
    k = np.repeat(k, 3, axis=1)
    return np.einsum("thd,shd->hts", q, k)
s_hf = scores(hq, hk, rope_half)
s_cpp = scores(wq, wk, rope_adj)
s_bad = scores(wq, wk, rope_half)   # what a loader that forgot to un-permute would compute
rel = lambda a, b: np.abs(a - b).max() / np.abs(b).max()
print("layer-0 q.k scores, HF vs llama.cpp convention: max rel diff", rel(s_hf, s_cpp))
print("layer-0 q.k scores, no un-permute + HF RoPE vs llama.cpp: max rel diff", rel(s_bad, s_cpp))
with torch.inference_mode():
    out = m(input_ids=torch.tensor(ids[None]), labels=torch.tensor(ids[None]))
print("first-64-token loss (HF)", out.loss.item())
