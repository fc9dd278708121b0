#!/usr/bin/env python3
"""Writes the hostile single-layer corpus: files `lowbit quantize` and `lowbit gemv`
once accepted and read wrong (issue 17). Each file is valid safetensors; its
metadata says which command reads it (`command`: "quantize METHOD" or "gemv"),
the exit code expected (`exit`) and a fragment the error message must hold
(`expect`). tests/test_cli.cpp runs every file. Run from this directory."""
import json
import math
import struct

IN, OUT = 32, 4


def write(name, tensors, command, expect, exit_code=1, metadata=None):
    header, blobs, offset = {}, [], 0
    for tensor, (dtype, shape, values) in tensors.items():
        fmt = {"F32": "f", "F64": "d", "I32": "i", "U8": "B"}[dtype]
        blob = struct.pack("<%d%s" % (len(values), fmt), *values)
        header[tensor] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    meta = {"command": command, "exit": str(exit_code), "expect": expect}
    meta.update(metadata or {})
    header["__metadata__"] = meta
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(name, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def ramp(n, scale=0.01, offset=0.0):
    return [scale * (((i * 7919) % 101) - 50) + offset for i in range(n)]


W = ("F32", [OUT, IN], ramp(OUT * IN))
X = ("F32", [8, IN], ramp(8 * IN, 0.1))


def with_value(values, index, value):
    values = list(values)
    values[index] = value
    return values


write("w3_without_w2.safetensors", {"W": W, "W3": W, "X": X}, "quantize awq --group-size 32",
      "tensor 'W3' is not read")
write("x_nan.safetensors", {"W": W, "X": ("F32", [8, IN], with_value(X[2], 37, math.nan))},
      "quantize rtn", "tensor 'X': expected finite values")
write("x_inf.safetensors", {"W": W, "X": ("F32", [8, IN], with_value(X[2], 5, math.inf))},
      "quantize absmax", "tensor 'X': expected finite values")
write("x_beyond_float.safetensors",
      {"W": W, "X": ("F64", [8, IN], with_value([float(v) for v in X[2]], 9, 1e300))},
      "quantize rtn", "tensor 'X': expected finite values")
write("ln_weight_rank_2.safetensors", {"W": W, "X": X, "ln_weight": ("F32", [1, IN], [1.0] * IN)},
      "quantize smoothquant", "tensor 'ln_weight' must have rank 1")
write("ln_weight_nan.safetensors",
      {"W": W, "X": X, "ln_weight": ("F32", [IN], with_value([1.0] * IN, 3, math.nan))},
      "quantize awq --group-size 32", "tensor 'ln_weight': expected finite values")
h = [0.0] * (IN * IN)
for i in range(IN):
    h[i * IN + i] = 1.0
write("h_not_symmetric.safetensors", {"W": W, "H": ("F64", [IN, IN], with_value(h, 1, 0.5))},
      "quantize bpdq", "H must be symmetric")
write("h_diagonal_beyond_float.safetensors",
      {"W": W, "H": ("F64", [IN, IN], [v * 1e39 for v in h])}, "quantize tacq",
      "overflows float")
# gemv inputs: no metadata 'method' (so read by their tensors), 32 inputs.
write("gemv_b_packed_u8.safetensors",
      {"B_packed": ("U8", [1, 2, OUT], [0] * (2 * OUT)), "c": ("F32", [1, 3, OUT], [0.5] * (3 * OUT))},
      "gemv", "tensor 'B_packed' must be I32, is U8")
write("gemv_scales_without_method.safetensors",
      {"qint": ("I32", [OUT, IN], [1] * (OUT * IN)), "scale": ("F32", [1, OUT], [0.1] * OUT),
       "zero": ("F32", [1, OUT], [2.0] * OUT), "scales": ("F32", [IN], [2.0] * IN)},
      "gemv", "tensor 'scales' in a file without metadata 'method'")
write("gemv_unknown_method.safetensors",
      {"qint": ("I32", [OUT, IN], [1] * (OUT * IN)), "scale": ("F32", [1, OUT], [0.1] * OUT),
       "zero": ("F32", [1, OUT], [2.0] * OUT)},
      "gemv", "metadata method = 'hqq'", metadata={"method": "hqq"})
write("gemv_smoothquant_without_w8.safetensors",
      {"scales": ("F32", [IN], [1.0] * IN), "Q": ("F32", [OUT, IN], [0.0] * (OUT * IN))},
      "gemv", "needs tensor 'W8'", 2, metadata={"method": "smoothquant"})
