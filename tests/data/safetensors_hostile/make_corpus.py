#!/usr/bin/env python3
"""Writes the hostile safetensors corpus that tests/test_safetensors.cpp replays
and tests/fuzz uses as its seed corpus. Files named valid_* must load; every
other file must be rejected with lowbit::Error.

    python3 tests/data/safetensors_hostile/make_corpus.py tests/data/safetensors_hostile
"""
import json
import os
import struct
import sys


def frame(header_text, data=b"", length=None):
    raw = header_text.encode() if isinstance(header_text, str) else header_text
    n = len(raw) if length is None else length
    return struct.pack("<Q", n) + raw + data


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def js(obj):
    return json.dumps(obj)


CASES = {
    "empty": b"",
    "short_length": b"\x05\x00\x00\x00\x00",
    "header_len_zero": frame(""),
    "header_past_eof": frame('{"a":1}', length=1000),
    "header_len_huge": frame('{}', length=1 << 63),
    "malformed_json": frame('{"W": {"dtype": "F32", '),
    "not_an_object": frame("[1, 2, 3]"),
    "deep_nesting": frame("[" * 20000 + "]" * 20000),
    "invalid_utf8": frame(b'{"\xff\xfe": {"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"\x00"),
    "unknown_dtype": frame(js({"W": entry("F8_E4M3", [2], 0, 2)}), b"\x00" * 2),
    "dtype_not_string": frame(js({"W": {"dtype": 5, "shape": [1], "data_offsets": [0, 4]}}), b"\x00" * 4),
    "missing_shape": frame(js({"W": {"dtype": "F32", "data_offsets": [0, 4]}}), b"\x00" * 4),
    "offsets_not_pair": frame(js({"W": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}), b"\x00" * 4),
    "offsets_float": frame('{"W": {"dtype": "F32", "shape": [1], "data_offsets": [0.0, 4]}}', b"\x00" * 4),
    "offsets_negative": frame(js({"W": entry("F32", [1], -4, 0)}), b"\x00" * 4),
    "offsets_reversed": frame(js({"W": entry("F32", [0], 4, 0)}), b"\x00" * 4),
    "offsets_past_data": frame(js({"W": entry("F32", [4], 0, 16)}), b"\x00" * 8),
    "offsets_huge": frame(js({"W": entry("U8", [1], 18446744073709551614, 18446744073709551615)}), b"\x00"),
    "overlapping": frame(js({"A": entry("F32", [2], 0, 8), "B": entry("F32", [2], 4, 12)}), b"\x00" * 12),
    "shape_mismatch": frame(js({"W": entry("F32", [3, 3], 0, 32)}), b"\x00" * 32),
    "negative_dim": frame(js({"W": entry("F32", [-1, 4], 0, 16)}), b"\x00" * 16),
    "shape_overflow": frame(js({"W": entry("F64", [1 << 40, 1 << 40, 1 << 40], 0, 8)}), b"\x00" * 8),
    "shape_not_array": frame(js({"W": {"dtype": "F32", "shape": 4, "data_offsets": [0, 16]}}), b"\x00" * 16),
    "duplicate_name": frame('{"W": {"dtype":"U8","shape":[1],"data_offsets":[0,1]}, '
                            '"W": {"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', b"\x00\x00"),
    "metadata_not_string": frame(js({"__metadata__": {"bits": 4}}), b""),
    "metadata_not_object": frame(js({"__metadata__": "x"}), b""),
    "entry_not_object": frame(js({"W": [1, 2]}), b""),
    # Duplicate keys at any depth (JSON parsers disagree on which one wins), and
    # headers that break the format's framing: it begins with '{' and may be
    # padded at the end with spaces (0x20), nothing else.
    "duplicate_shape_key": frame('{"W": {"dtype":"U8","shape":[1],"shape":[2],"data_offsets":[0,2]}}',
                                 b"\x00\x00"),
    "duplicate_metadata_key": frame('{"__metadata__": {"bits":"4","bits":"8"}}'),
    "nul_padding": frame(js({"W": entry("U8", [1], 0, 1)}).encode() + b"\x00" * 7, b"\x01"),
    "utf8_bom": frame(b"\xef\xbb\xbf" + js({"W": entry("U8", [1], 0, 1)}).encode(), b"\x01"),
    "leading_space": frame(" " + js({"W": entry("U8", [1], 0, 1)}), b"\x01"),
    # Valid files: the reader must accept these.
    "valid_space_padding": frame(js({"W": entry("U8", [1], 0, 1)}) + " " * 5, b"\x01"),
    "valid_all_dtypes": None,
    "valid_empty_tensor": frame(js({"E": entry("F32", [0, 4], 0, 0), "S": entry("I32", [], 0, 4)}),
                                struct.pack("<i", -7)),
    "valid_unaligned": frame('{"W":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
                             struct.pack("<2f", 1.5, -2.25)),
}


def all_dtypes():
    parts = [("D", "F64", [2], struct.pack("<2d", 1.0, -2.0)),
             ("F", "F32", [2], struct.pack("<2f", 3.0, -4.0)),
             ("H", "F16", [2], struct.pack("<2e", 0.5, -1.5)),
             ("B", "BF16", [2], b"\x80\x3f\x00\xc0"),  # 1.0, -2.0
             ("L", "I64", [2], struct.pack("<2q", 5, -6)),
             ("I", "I32", [2], struct.pack("<2i", 7, -8)),
             ("S", "I16", [2], struct.pack("<2h", 9, -10)),
             ("C", "I8", [2], struct.pack("<2b", 11, -12)),
             ("U", "U8", [2], bytes([13, 14])),
             ("T", "BOOL", [2], bytes([1, 0]))]
    header, data = {"__metadata__": {"purpose": "every dtype"}}, b""
    for name, dtype, shape, raw in parts:
        header[name] = entry(dtype, shape, len(data), len(data) + len(raw))
        data += raw
    return frame(js(header), data)


def main(target):
    for name, blob in CASES.items():
        if blob is None:
            blob = all_dtypes()
        with open(os.path.join(target, name + ".safetensors"), "wb") as out:
            out.write(blob)


if __name__ == "__main__":
    main(sys.argv[1])
