#!/usr/bin/env python3
"""Writes the command-line corpus that tests/test_cli_command_line.cpp replays
and tests/fuzz/fuzz_cli.cpp uses as its seed corpus: one argument per line,
the words after `lowbit`. Files named valid_* must parse (their options may
still be refused when read); every other file must be refused with a usage
error. Option names as tools/lowbit's tables and the README give them.
Standard library only.

    python3 tests/data/cli_hostile/make_corpus.py tests/data/cli_hostile
"""
import os
import sys

IO = ["--in", "layer.safetensors", "--out", "out.safetensors"]
CASES = {
    "valid_help": ["--help"],
    "valid_bare": [],
    "valid_quantize_help": ["quantize", "gptq", "--help"],
    "valid_rtn": ["quantize", "rtn"] + IO + ["--bits", "3", "--group-size", "128", "--sym",
                                             "--gguf-type", "Q4_K"],
    "valid_absmax": ["quantize", "absmax"] + IO + ["--per-tensor", "--bits", "8"],
    "valid_gptq": ["quantize", "gptq"] + IO + ["--bits", "2", "--group-size", "-1", "--act-order",
                                               "--static-groups", "--percdamp", "0.1",
                                               "--block-size", "64", "--threads", "2"],
    "valid_awq": ["quantize", "awq"] + IO + ["--grid", "10", "--gguf-type", "q5_1"],
    "valid_smoothquant": ["quantize", "smoothquant"] + IO + ["--alpha", "0.85"],
    "valid_tacq": ["quantize", "tacq"] + IO + ["--fraction", "0.01", "--outlier-dtype", "f32",
                                               "--saliency-from", "rtn"],
    "valid_bpdq": ["quantize", "bpdq"] + IO + ["--planes", "3", "--iters", "5", "--no-gar",
                                               "--ridge", "1e-3"],
    "valid_quantize_model": ["quantize-model", "--model", "m.bin", "--out", "dir", "--method",
                             "awq", "--max-shard-size", "2GiB", "--calib-length", "128",
                             "--calibration", "float"],
    "valid_quantize_model_gguf": ["quantize-model", "--model", "hf", "--out", "m.gguf",
                                  "--format", "gguf", "--type", "q6_K", "--method", "rtn"],
    "valid_gemv": ["gemv", "--in", "q.safetensors", "--x", "x.safetensors", "--out", "y",
                   "--exact"],
    "valid_gguf_info_bare": ["gguf", "info", "model.gguf"],
    "valid_gguf_logits": ["gguf", "logits", "--in", "m.gguf", "--tokens", "1,2,3", "--out", "l"],
    "valid_demo": ["demo", "--size", "large"],
    "unknown_command": ["quantise"],
    "unknown_method": ["quantize", "hqq"] + IO,
    "quantize_no_method": ["quantize"],
    "unknown_option": ["quantize", "rtn"] + IO + ["--bogus"],
    "option_of_another_command": ["gemv", "--bits", "4"],
    "value_missing": ["quantize", "rtn", "--in"],
    "value_is_an_option": ["quantize", "rtn", "--in", "a", "--out", "--sym"],
    "option_twice": ["quantize", "rtn", "--bits", "4", "--bits", "4"],
    "bits_out_of_range": ["quantize", "gptq", "--bits", "1"],
    "damp_nan": ["quantize", "gptq", "--damp", "nan"],
    "threads_overflow": ["demo", "--threads", "99999999999999999999999"],
    "dashes_alone": ["demo", "--"],
    "bare_word": ["demo", "small"],
    "gguf_no_subcommand": ["gguf", "--in", "m.gguf"],
    "gguf_unknown_subcommand": ["gguf", "convert", "m.gguf"],
}


def main(out):
    os.makedirs(out, exist_ok=True)
    for name, words in CASES.items():
        with open(os.path.join(out, name + ".txt"), "wb") as f:
            f.write("\n".join(words).encode())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))
