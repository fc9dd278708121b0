#!/usr/bin/env python3
"""Writes the llama2.c checkpoint corpus that tests/test_llama2c.cpp replays and
tests/fuzz/fuzz_llama2c.cpp uses as its seed corpus, from the format of
llama2.c's export ("version 0", shared/models/README.md): seven little-endian
int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size (negative:
separate classifier), seq_len), then float32 arrays. Files named valid_* must
load; every other file must be rejected with lowbit::Error. Standard library only.

    python3 tests/data/llama2c_hostile/make_corpus.py tests/data/llama2c_hostile
"""
import os
import struct
import sys


def checkpoint(dim, hidden, layers, heads, kv_heads, vocab, seq_len, value=0.25):
    """A whole checkpoint with every weight `value` and llama2.c's RoPE tables."""
    head = dim // heads
    kv_dim = head * kv_heads
    floats = abs(vocab) * dim                      # token_embedding
    floats += layers * dim                         # rms_att
    floats += layers * (dim * dim + 2 * kv_dim * dim + dim * dim)  # wq, wk, wv, wo
    floats += layers * dim                         # rms_ffn
    floats += layers * 3 * hidden * dim            # w1, w2, w3
    floats += dim                                  # rms_final
    floats += seq_len * head                       # freq_cis_real, freq_cis_imag
    if vocab < 0:
        floats += -vocab * dim                     # wcls
    header = struct.pack("<7i", dim, hidden, layers, heads, kv_heads, vocab, seq_len)
    return header + struct.pack("<f", value) * floats


def main(out):
    os.makedirs(out, exist_ok=True)
    valid = checkpoint(8, 16, 2, 2, 1, 8, 4)
    cases = {
        "valid_tied.bin": valid,
        "valid_untied.bin": checkpoint(8, 16, 1, 2, 2, -8, 4),
        "empty.bin": b"",
        "header_truncated.bin": valid[:20],
        "weights_truncated.bin": valid[:-4],
        "trailing_data.bin": valid + b"\0\0\0\0",
        "weight_nan.bin": valid[:28] + struct.pack("<f", float("nan")) + valid[32:],
        # Headers that claim far more than the file holds.
        "n_layers_huge.bin": struct.pack("<7i", 8, 16, 1000000000, 2, 1, 8, 4) + valid[28:],
        "dims_max.bin": struct.pack("<7i", 65536, 262144, 1024, 1, 1, 4194304, 1048576),
        "vocab_int_min.bin": struct.pack("<7i", 8, 16, 2, 2, 1, -2**31, 4) + valid[28:],
        "heads_not_dividing.bin": struct.pack("<7i", 8, 16, 2, 3, 1, 8, 4) + valid[28:],
        "kv_heads_zero.bin": struct.pack("<7i", 8, 16, 2, 2, 0, 8, 4) + valid[28:],
        "head_size_odd.bin": struct.pack("<7i", 6, 16, 2, 2, 1, 8, 4) + valid[28:],
    }
    for name, data in cases.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))
