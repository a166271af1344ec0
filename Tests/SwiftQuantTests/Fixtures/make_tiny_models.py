#!/usr/bin/env python3
"""Builds the tiny model fixtures for ModelTests. Run by hand, never in CI:

    python -m venv venv && venv/bin/pip install torch transformers safetensors numpy
    venv/bin/python Tests/SwiftQuantTests/Fixtures/make_tiny_models.py

Each model is a randomly initialised (seeded) transformers model saved as a Hugging Face directory
(config.json + model.safetensors, float32) under Fixtures/tiny/<name>/, plus expected.safetensors with
`input_ids` (int32 [T]), `logits` (float32 [T, vocab], transformers' eager forward) and `loss` (float32 [1],
transformers' loss with labels = input_ids, i.e. mean NLL over T - 1 shifted tokens).
"""
import json
import os

import torch
from safetensors.torch import save_file
from transformers import (LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny")
T = 32


def randomise(model, seed):
    """Non-trivial values everywhere (norm weights ≠ 1, biases ≠ 0) so a forgotten term shows up."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif "embed" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:  # linear weights [out, in]
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)


def build(name, model, seed):
    randomise(model, seed)
    model.eval()
    out = os.path.join(HERE, name)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(seed + 1000)
    ids = torch.randint(0, vocab, (1, T), generator=g)
    with torch.no_grad():
        res = model(input_ids=ids, labels=ids)
    save_file({"input_ids": ids[0].to(torch.int32).contiguous(),
               "logits": res.logits[0].float().contiguous(),
               "loss": res.loss.float().reshape(1).contiguous()},
              os.path.join(out, "expected.safetensors"))
    # Keep the directory minimal: config + weights + expectations.
    for f in os.listdir(out):
        if f not in ("config.json", "model.safetensors", "expected.safetensors"):
            os.remove(os.path.join(out, f))
    print(name, "loss", float(res.loss), "max|logit|", float(res.logits.abs().max()))


def main():
    torch.manual_seed(0)
    common = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=128, max_position_embeddings=64, rms_norm_eps=1e-5,
                  attn_implementation="eager")
    build("llama_gqa", LlamaForCausalLM(LlamaConfig(rope_theta=10000.0, tie_word_embeddings=True, **common)), 1)
    # Llama 3 rope scaling with a small original context so all three frequency bands occur (head_dim 16:
    # wavelengths 6.3 … 20000 against 4 (high) and 16 (low)); untied LM head.
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}
    # (smaller MLP and vocabulary to keep all fixtures under 1 MB)
    small = dict(common, intermediate_size=64, vocab_size=64)
    build("llama3_untied", LlamaForCausalLM(LlamaConfig(rope_theta=500000.0, rope_scaling=scaling,
                                                        tie_word_embeddings=False, **small)), 2)
    build("qwen2", Qwen2ForCausalLM(Qwen2Config(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                                num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                                                max_position_embeddings=64, rms_norm_eps=1e-6,
                                                rope_theta=1000000.0, tie_word_embeddings=True,
                                                attn_implementation="eager")), 3)
    build("opt", OPTForCausalLM(OPTConfig(hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                                          vocab_size=128, max_position_embeddings=32, word_embed_proj_dim=64,
                                          do_layer_norm_before=True, attn_implementation="eager")), 4)


if __name__ == "__main__":
    main()
