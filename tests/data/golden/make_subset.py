#!/usr/bin/env python3
"""Builds the compact golden subset bundled with lowbit from a full golden directory.

    python3 tests/data/golden/make_subset.py ../shared/golden tests/data/golden

Each rule keeps the tensors a test reads from the files whose name matches
its pattern (the first matching rule applies); everything else (inputs stored
once in inputs_*.safetensors, large intermediates) is dropped. Inputs a case
holds itself (W, W2, X) are dropped only after checking that they equal the
shared inputs file of its shape, which the case then names in `inputs_file`.
A hoisted tensor that every matching case shares byte for byte (the GPTQ and
BPDQ Hessians) is stored once in the case's inputs file under a new name; a case
without an inputs file keeps its own W and that tensor. Integer tensors whose values fit in 0..255 are stored as U8 (lossless).
Metadata is kept, with a note of what was kept. Standard library only.
"""
import fnmatch
import json
import os
import struct
import sys

SMOOTHQUANT_SMALL = ["scales", "act_scales", "ln_weight", "ln_bias", "ln_weight_smoothed",
                     "ln_bias_smoothed"]

# file pattern -> tensors to keep (None keeps every tensor)
RULES = [
    ("inputs_64x256.*", None),
    ("rtn_*", ["qint", "scale", "zero"]),
    ("gptq_*", ["qint", "scale", "zero", "g_idx", "perm"]),
    ("awq_*", ["scales", "clip_max_val", "q_scales", "q_zeros", "search_loss_history",
               "ln_weight_scaled", "ln_bias_scaled"]),
    # The f64 variants keep only the small tensors; their matrices are checked
    # against the full directory.
    ("smoothquant_*_f64.*", SMOOTHQUANT_SMALL),
    ("smoothquant_*", SMOOTHQUANT_SMALL + ["W8_smoothed"]),
    # BPDQ: the official payload (B_packed, c) and the intermediates the tests
    # pin (8-bit init, first fit, kept rounds, GAR perms); B and Q follow from them.
    ("bpdq_*", ["B_packed", "c", "c_init", "init_scale8", "init_zero8", "best_iter", "group_score",
                "final_perm", "global_perm"]),
]
SHARED_INPUTS = ["W", "W2", "X"]

# file pattern -> (tensor, name in the inputs file)
HOISTED = [
    ("gptq_*", "H", "H_gptq"),
    ("bpdq_*", "H", "H_bpdq"),
]


def read(path):
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    data = blob[8 + n :]
    tensors = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        tensors[name] = (entry["dtype"], entry["shape"], data[begin:end])
    return meta, tensors


def values(dtype, raw):
    """The numbers in a raw tensor, as Python floats or ints."""
    fmt = {"F64": "d", "F32": "f", "I32": "i", "U8": "B"}[dtype]
    return struct.unpack("<%d%s" % (len(raw) // struct.calcsize(fmt), fmt), raw)


def check_shared_inputs(source, meta, tensors):
    """Names the shared inputs file when the case's own W/W2/X equal its tensors."""
    present = [k for k in SHARED_INPUTS if k in tensors]
    if not present or "inputs_file" in meta:
        return
    inputs_name = "inputs_%s.safetensors" % meta["shape"]
    _, inputs = read(os.path.join(source, inputs_name))
    for k in present:
        dtype, shape, raw = tensors[k]
        idtype, ishape, iraw = inputs[k]
        if shape != ishape or values(dtype, raw) != values(idtype, iraw):
            sys.exit("%s: tensor %s differs from %s; keep it in the rule" % (meta["case"], k, inputs_name))
    meta["inputs_file"] = inputs_name


def narrow(dtype, raw):
    """I32 -> U8 when every value fits."""
    if dtype != "I32":
        return dtype, raw
    values = struct.unpack("<%di" % (len(raw) // 4), raw)
    if all(0 <= v <= 255 for v in values):
        return "U8", bytes(values)
    return dtype, raw


def write(path, meta, tensors):
    size = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "F16": 2, "BF16": 2, "I16": 2}
    order = sorted(tensors, key=lambda k: (-size.get(tensors[k][0], 1), k))
    header, offset, chunks = {"__metadata__": meta}, 0, []
    for name in order:
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        chunks.append(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def main(source, target):
    outputs = {}  # file name -> (meta, tensors)
    hoisted = {}  # (inputs file, new name) -> (dtype, shape, raw, first case)
    for name in sorted(os.listdir(source)):
        if not name.endswith(".safetensors"):
            continue
        rule = next((keep for pattern, keep in RULES if fnmatch.fnmatch(name, pattern)), False)
        if rule is False:
            continue
        meta, tensors = read(os.path.join(source, name))
        if rule is not None:
            check_shared_inputs(source, meta, tensors)
        keep = None if rule is None else set(rule)
        for pattern, tensor, new_name in HOISTED:
            if not fnmatch.fnmatch(name, pattern) or tensor not in tensors:
                continue
            inputs = meta.get("inputs_file")
            if inputs is None:  # self-contained case: keep what its test needs
                keep |= {"W", tensor}
                continue
            entry = hoisted.setdefault((inputs, new_name), (*tensors[tensor], name))
            if entry[:3] != tensors[tensor]:
                sys.exit("%s: %s differs from %s's; it cannot be stored once" % (name, tensor, entry[3]))
        kept = {k: v for k, v in tensors.items() if keep is None or k in keep}
        kept = {k: (*narrow(d, r)[:1], s, narrow(d, r)[1]) for k, (d, s, r) in kept.items()}
        meta.pop("tensors", None)
        meta["bundled_subset"] = "tensors kept: " + ", ".join(sorted(kept)) + \
            "; integer tensors narrowed to U8 where lossless; see tests/data/golden/README.md"
        outputs[name] = (meta, kept)
    for (inputs, new_name), (dtype, shape, raw, first) in sorted(hoisted.items()):
        meta, tensors = outputs[inputs]
        tensors[new_name] = (dtype, shape, raw)
        meta["hoisted_" + new_name] = "shared by every %s* case naming this file (e.g. %s)" % (
            first.split("_")[0] + "_", first)
        meta["bundled_subset"] = "tensors kept: " + ", ".join(sorted(tensors)) + \
            "; integer tensors narrowed to U8 where lossless; see tests/data/golden/README.md"
    for name, (meta, kept) in sorted(outputs.items()):
        write(os.path.join(target, name), meta, kept)
        print(name, sorted(kept))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
