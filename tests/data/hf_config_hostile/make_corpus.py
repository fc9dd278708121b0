#!/usr/bin/env python3
"""Writes the config.json corpus that tests/test_hf.cpp replays and
tests/fuzz/fuzz_hf_config.cpp uses as its seed corpus. Each file is a
config.json, optionally followed by a NUL byte and a
model.safetensors.index.json; both go into a directory whose
model.safetensors holds a tiny Llama (lowbit::fuzz::tiny_hf_weights: hidden 8,
intermediate 16, one layer, 2 heads, 1 KV head, vocabulary 8, separate lm_head,
q/k/v biases). Files named valid_* must open; every other file must be rejected
with lowbit::Error. Field names as transformers' LlamaConfig and Qwen2Config.
Standard library only.

    python3 tests/data/hf_config_hostile/make_corpus.py tests/data/hf_config_hostile
"""
import json
import os
import sys

LAYER = "model.layers.0."
TENSORS = ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
           LAYER + "input_layernorm.weight", LAYER + "post_attention_layernorm.weight"] + [
    LAYER + p + ".weight" for p in ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                    "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj",
                                    "mlp.up_proj"]] + [
    LAYER + p + ".bias" for p in ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]]


def config(**changes):
    c = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
         "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
         "num_key_value_heads": 1, "vocab_size": 8, "max_position_embeddings": 16,
         "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "bos_token_id": 1, "hidden_act": "silu",
         "tie_word_embeddings": False, "rope_scaling": None}
    for key, value in changes.items():
        if value is None:
            c.pop(key, None)
        else:
            c[key] = value
    return json.dumps(c).encode()


def index(weight_map):
    return json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}).encode()


def main(out):
    os.makedirs(out, exist_ok=True)
    every = {name: "model.safetensors" for name in TENSORS}
    cases = {
        "valid_llama.json": config(),
        "valid_qwen2.json": config(architectures=["Qwen2ForCausalLM"]),
        "valid_mistral_window.json": config(architectures=["MistralForCausalLM"],
                                            sliding_window=4),
        "valid_llama3_scaling.json": config(rope_scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8}),
        "valid_index.json": config() + b"\0" + index(every),
        "empty.json": b"",
        "not_an_object.json": b"[1, 2]",
        "nested_deep.json": b"[" * 1000,
        "architecture_missing.json": config(architectures=None),
        "architecture_unknown.json": config(architectures=["GPT2LMHeadModel"]),
        "hidden_size_string.json": config(hidden_size="8"),
        "hidden_size_uint64_max.json": config(hidden_size=2**64 - 1),
        "hidden_size_float_huge.json": config(hidden_size=2.2e100),
        "head_dim_odd.json": config(head_dim=3),
        "rope_scaling_unknown.json": config(rope_scaling={"rope_type": "yarn", "factor": 2.0}),
        "rope_factor_huge.json": config(rope_scaling={"rope_type": "linear", "factor": 1e300}),
        "quantization_unknown.json": config(quantization_config={"quant_method": "hqq", "bits": 4}),
        # Tables of 2^20 positions x 4096 (16 GiB) for a model of 8-wide embeddings.
        "rope_tables_huge.json": config(head_dim=4096, max_position_embeddings=2**20),
        "index_outside.json": config() + b"\0" + index({"lm_head.weight": "../model.safetensors"}),
        "index_missing_shard.json": config() + b"\0" + index({"lm_head.weight": "other.safetensors"}),
        "index_not_map.json": config() + b"\0" + b'{"weight_map": []}',
        "index_tensor_missing.json": config() + b"\0" + index(
            {k: v for k, v in every.items() if k != "lm_head.weight"}),
    }
    for name, data in cases.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))
