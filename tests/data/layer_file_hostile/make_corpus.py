#!/usr/bin/env python3
"""Writes the seed corpus of tests/fuzz/fuzz_layer_file.cpp, which
tests/test_layer_file.cpp replays: each file describes a safetensors file of
layer or checkpoint tensors (lowbit::fuzz::layer_file_from_description in
tests/fuzz/fuzz_targets.hpp) that every reader reads, giving a value or
lowbit::Error. Layouts as layer_file.hpp and the GPTQ, AWQ and BPDQ formats
define them. Standard library only.

    python3 tests/data/layer_file_hostile/make_corpus.py tests/data/layer_file_hostile
"""
import os
import struct
import sys

NAMES = ["W", "W2", "W3", "X", "H", "G", "ln_weight", "ln_bias", "Q", "qint", "scale", "zero",
         "g_idx", "perm", "B", "c", "B_packed", "mask", "outlier_rowptr", "outlier_col",
         "outlier_val", "scales", "W8", "w8_scale", "gguf_blocks", "l.qweight", "l.qzeros",
         "l.scales", "l.g_idx", "l.bias", "l.B", "l.c"]
DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"]
METHODS = ["", "rtn", "absmax", "gptq", "awq", "tacq", "bpdq", "smoothquant", "unknown"]
GGUF_TYPES = ["", "q4_0", "q8_0", "q4_K", "q6_K", "iq4_nl", "tq2_0", "q2_K", "f32"]


def pool():
    return ("pool", 0)


def modulo(k):
    return ("mod", k)


def quotient(k):
    return ("div", k)


def const(v):
    return ("const", v)


def fill_byte(fill):
    kind, k = fill
    if kind == "pool":
        return 0
    if kind == "const":
        return 4 * k + 3
    return 4 * (k - 1) + (1 if kind == "mod" else 2)


def describe(tensors, method="", gguf_type="", values=b""):
    out = bytes([METHODS.index(method) | GGUF_TYPES.index(gguf_type) << 4])
    for name, dtype, shape, fill in tensors:
        out += bytes([NAMES.index(name), DTYPES.index(dtype), len(shape)])
        out += b"".join(struct.pack("<H", d) for d in shape)
        out += bytes([fill_byte(fill)])
    return out + b"\xff" + values


def main(out):
    os.makedirs(out, exist_ok=True)
    rows, cols = 8, 64
    q = ("Q", "F32", [rows, cols], modulo(5))
    uniform = [q, ("qint", "I32", [rows, cols], modulo(4)), ("scale", "F32", [1, rows], const(1)),
               ("zero", "F32", [1, rows], const(2)), ("g_idx", "I32", [cols], quotient(64))]
    cases = {
        "valid_layer_inputs": describe([
            ("W", "F32", [rows, cols], modulo(7)), ("W2", "BF16", [4, cols], modulo(3)),
            ("X", "F16", [16, cols], modulo(11)), ("H", "F64", [cols, cols], modulo(2)),
            ("ln_weight", "F32", [cols], const(1))]),
        "valid_rtn_result": describe(uniform, "rtn"),
        "valid_tacq_result": describe(uniform + [
            ("mask", "U8", [rows, cols], const(0)), ("outlier_rowptr", "I32", [rows + 1], const(0)),
            ("outlier_col", "I32", [0], const(0)), ("outlier_val", "F16", [0], const(0))], "tacq"),
        "valid_bpdq_result": describe([q, ("B_packed", "I32", [2, 2, rows], modulo(9)),
                                       ("c", "F32", [1, 3, rows], modulo(3))], "bpdq"),
        "valid_smoothquant_result": describe([
            q, ("W8", "I8", [rows, cols], modulo(9)), ("w8_scale", "F32", [rows], const(1)),
            ("scales", "F32", [cols], const(2))], "smoothquant"),
        "valid_awq_result": describe(uniform + [("scales", "F32", [cols], const(1))], "awq"),
        "valid_gguf_q8_0_result": describe([q, ("gguf_blocks", "U8", [rows, 2 * 34], const(0))],
                                           "rtn", "q8_0"),
        "valid_gptq_linear": describe([
            ("l.qweight", "I32", [cols // 32 * 4, 32], pool()), ("l.qzeros", "I32", [1, 4], pool()),
            ("l.scales", "F16", [1, 32], const(1)), ("l.g_idx", "I32", [cols], quotient(64)),
            ("l.bias", "F16", [32], const(1))], values=b"\x12\x34\x56\x78"),
        "valid_awq_linear": describe([
            ("l.qweight", "I32", [cols, 4], pool()), ("l.qzeros", "I32", [1, 4], pool()),
            ("l.scales", "F16", [1, 32], const(1))], values=b"\x87\x65\x43\x21"),
        "valid_bpdq_linear": describe([
            ("l.B", "I32", [2, 2, rows], modulo(13)), ("l.c", "F16", [1, 3, rows], modulo(3))]),
        # Larger tensors than the safetensors fuzzer reaches (it skips over 2^16 values).
        "large_gptq_linear": describe([
            ("l.qweight", "I32", [1024 // 32 * 3, 1024], pool()),
            ("l.qzeros", "I32", [8, 1024 * 3 // 32], pool()),
            ("l.scales", "BF16", [8, 1024], const(1))], values=b"\x49\x92\x24"),
        "empty": b"",
    }
    for name, data in cases.items():
        with open(os.path.join(out, name + ".bin"), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))
