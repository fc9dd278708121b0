#!/usr/bin/env python3
"""Writes the hostile GGUF corpus that tests/test_gguf.cpp replays and
tests/fuzz/fuzz_gguf.cpp uses as its seed corpus. Files named valid_* must
load; every other file must be rejected with lowbit::Error. Standard library only.

    python3 tests/data/gguf_hostile/make_corpus.py tests/data/gguf_hostile
"""
import os
import struct
import sys

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
F32_T, Q4_0_T, Q4_K_T = 0, 2, 12


def s(text):
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv(key, vtype, payload):
    return s(key) + struct.pack("<i", vtype) + payload


def arr(etype, items, count=None):
    n = len(items) if count is None else count
    return struct.pack("<iQ", etype, n) + b"".join(items)


def info(name, dims, ttype, offset):
    return s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + \
        struct.pack("<iQ", ttype, offset)


def gguf(kvs=(), infos=(), data=b"", version=3, n_tensors=None, n_kv=None, align=32, pad=True):
    head = b"GGUF" + struct.pack("<IQQ", version, len(infos) if n_tensors is None else n_tensors,
                                 len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(infos)
    if pad and infos:
        body += b"\0" * (-len(body) % align)
    return body + data


F32x4 = struct.pack("<4f", 1.0, -2.0, 0.5, 3.0)
ONE_F32 = [info("w", [4], F32_T, 0)]
Q4_BLOCK = struct.pack("<e", 0.5) + bytes(range(16))
ALIGN64 = kv("general.alignment", U32, struct.pack("<I", 64))

CASES = {
    "empty": b"",
    "short_magic": b"GG",
    "bad_magic": b"GGML" + bytes(20),
    "version_1": gguf(version=1),
    "version_4": gguf(version=4),
    "big_endian": b"GGUF" + struct.pack(">IQQ", 3, 0, 0),
    "truncated_header": gguf()[:15],
    "tensor_count_huge": gguf(n_tensors=1 << 62),
    "key_count_huge": gguf(n_kv=(1 << 64) - 1),
    "key_empty": gguf([kv("", U8, b"\x01")]),
    "key_length_huge": gguf([struct.pack("<Q", 1 << 60) + b"k"]),
    "key_duplicate": gguf([kv("a", U8, b"\x01"), kv("a", U8, b"\x02")]),
    "value_type_bad": gguf([kv("a", 13, b"\x01")]),
    "value_type_negative": gguf([kv("a", -1, b"\x01")]),
    "value_truncated": gguf([kv("a", U64, b"\x01\x02")]),
    "bool_two": gguf([kv("a", BOOL, b"\x02")]),
    "bool_array_bad": gguf([kv("a", ARR, arr(BOOL, [b"\x01", b"\x00", b"\xff"]))]),
    "string_length_huge": gguf([kv("a", STR, struct.pack("<Q", (1 << 64) - 1))]),
    "array_length_huge": gguf([kv("a", ARR, arr(U32, [], count=1 << 61))]),
    "array_of_strings_huge": gguf([kv("a", ARR, arr(STR, [s("x")], count=1 << 40))]),
    "array_type_bad": gguf([kv("a", ARR, arr(99, []))]),
    "array_nested_too_deep": gguf([kv("a", ARR, struct.pack("<iQ", ARR, 1) * 40 + struct.pack("<iQ", U8, 0))]),
    "alignment_not_u32": gguf([kv("general.alignment", U64, struct.pack("<Q", 32))]),
    "alignment_zero": gguf([kv("general.alignment", U32, struct.pack("<I", 0))]),
    "alignment_not_power_of_two": gguf([kv("general.alignment", U32, struct.pack("<I", 48))]),
    "tensor_name_empty": gguf(infos=[info("", [4], F32_T, 0)], data=F32x4),
    "tensor_name_too_long": gguf(infos=[info("n" * 65, [4], F32_T, 0)], data=F32x4),
    "tensor_duplicate": gguf(infos=[info("w", [4], F32_T, 0), info("w", [4], F32_T, 32)], data=F32x4 + bytes(48)),
    "tensor_dims_5": gguf(infos=[info("w", [1, 1, 1, 1, 4], F32_T, 0)], data=F32x4),
    "tensor_dim_negative": gguf(infos=[info("w", [(1 << 64) - 4], F32_T, 0)], data=F32x4),
    "tensor_dims_overflow": gguf(infos=[info("w", [1 << 32, 1 << 32], F32_T, 0)], data=F32x4),
    "tensor_size_overflow": gguf(infos=[info("w", [1 << 61, 2], 28, 0)], data=F32x4),  # f64
    "tensor_type_removed": gguf(infos=[info("w", [32], 4, 0)], data=bytes(32)),
    "tensor_type_unknown": gguf(infos=[info("w", [32], 99, 0)], data=bytes(32)),
    "tensor_row_not_whole_blocks": gguf(infos=[info("w", [48], Q4_0_T, 0)], data=bytes(64)),
    "tensor_offset_unaligned": gguf(infos=[info("w", [4], F32_T, 8)], data=bytes(64)),
    "tensor_offset_huge": gguf(infos=[info("w", [4], F32_T, (1 << 64) - 32)], data=F32x4),
    "tensor_data_truncated": gguf(infos=[info("w", [4], F32_T, 0)], data=F32x4[:12]),
    "tensor_data_missing": gguf(infos=[info("w", [4], F32_T, 0)], pad=False),
    "tensors_overlap": gguf(infos=[info("a", [16], F32_T, 0), info("b", [16], F32_T, 32)], data=bytes(96)),
    "tensor_infos_truncated": gguf(infos=ONE_F32, n_tensors=2, data=F32x4),
    "q4_0_d_infinite": gguf(infos=[info("w", [32], Q4_0_T, 0)], data=b"\x00\x7c" + bytes(16)),
    # Valid files: the reader must accept these.
    "valid_minimal": gguf(),
    "valid_version_2": gguf([kv("general.architecture", STR, s("llama"))], version=2),
    "valid_every_type": None,
    "valid_nested_arrays": gguf([kv("a", ARR, arr(ARR, [arr(I32, [struct.pack("<i", 7)]), arr(STR, [s("x"), s("")]),
                                                        arr(ARR, [arr(U8, [])])]))]),
    "valid_empty_tensor": gguf(infos=[info("e", [0, 4], F32_T, 0), info("w", [4], F32_T, 0)], data=F32x4),
    "valid_unordered_offsets": gguf(infos=[info("b", [4], F32_T, 32), info("a", [4], F32_T, 0)],
                                    data=F32x4 + bytes(16) + F32x4),
    "valid_alignment_64": gguf([ALIGN64], [info("w", [32], Q4_0_T, 0)], Q4_BLOCK, align=64),
    "valid_q4_k": gguf(infos=[info("k", [256], Q4_K_T, 0)], data=struct.pack("<ee", 0.25, 0.125) + bytes(140)),
}


def every_type():
    scalars = [(U8, struct.pack("<B", 200)), (I8, struct.pack("<b", -100)), (U16, struct.pack("<H", 60000)),
               (I16, struct.pack("<h", -30000)), (U32, struct.pack("<I", 4000000000)),
               (I32, struct.pack("<i", -2000000000)), (F32, struct.pack("<f", 3.25)), (BOOL, b"\x01"),
               (U64, struct.pack("<Q", 18000000000000000000)), (I64, struct.pack("<q", -9000000000000000000)),
               (F64, struct.pack("<d", -2.5e-300))]
    kvs = [kv("t.%d" % t, t, raw) for t, raw in scalars]
    kvs.append(kv("t.str", STR, s("h\u00e9llo")))
    kvs += [kv("t.arr%d" % t, ARR, arr(t, [raw, raw])) for t, raw in scalars]
    kvs.append(kv("t.arr_str", ARR, arr(STR, [s("a"), s("")])))
    return gguf(kvs, [info("w", [4], F32_T, 0)], F32x4)


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for name, data in CASES.items():
        if data is None:
            data = every_type()
        with open(os.path.join(out_dir, name + ".gguf"), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))
