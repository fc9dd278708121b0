// lowbit: the command-line tool.
//
//   lowbit quantize METHOD --in IN.safetensors --out OUT.safetensors [options]
//   lowbit quantize-model --model CKPT.bin|HF_DIR --out DIR|OUT.safetensors|OUT.gguf [options]
//   lowbit gemv --in QUANT.safetensors --x X.safetensors --out Y.safetensors [options]
//   lowbit gguf info --in FILE.gguf, lowbit gguf dequantize --in FILE.gguf --out FILE
//   lowbit gguf logits --in FILE.gguf --tokens 1,2,3 --out LOGITS.safetensors
//   lowbit demo [options]
//   lowbit --help, lowbit COMMAND --help, lowbit quantize METHOD --help
//
// Exit codes: 0 success, 1 failure (bad file, numerical error), 2 misuse
// (unknown option, missing tensor, bad option value).
#include "interrupts.hpp"
#include "tool.hpp"

int main(int argc, char** argv) {
  lowbit::cli::install_interrupt_handlers();
  return lowbit::cli::run_tool({argv + 1, argv + argc});
}
