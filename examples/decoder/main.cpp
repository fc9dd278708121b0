// lowbit_decoder: generates token ids from a llama2.c checkpoint with the
// float decoder and reports the decoding speed.
//
//   lowbit_decoder CHECKPOINT.bin [--tokens N] [--temperature T] [--seed S]
//
// There is no tokenizer: it prints token ids (1 is BOS).
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>

#include "evaluation.hpp"
#include "llama.hpp"

int main(int argc, char** argv) {
  const std::string usage =
      "usage: lowbit_decoder CHECKPOINT.bin [--tokens N] [--temperature T] [--seed S]\n";
  std::string path;
  int tokens = 256;
  float temperature = 0.8f;
  unsigned long long seed = 42;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--tokens" && has_value)
      tokens = std::atoi(argv[++i]);
    else if (arg == "--temperature" && has_value)
      temperature = std::strtof(argv[++i], nullptr);
    else if (arg == "--seed" && has_value)
      seed = std::strtoull(argv[++i], nullptr, 10);
    else if (arg == "--help" || arg == "-h")
      return std::cout << usage, 0;
    else if (path.empty() && arg.rfind("--", 0) != 0)
      path = arg;
    else
      return std::cerr << "lowbit_decoder: unexpected argument '" << arg << "'\n" << usage, 2;
  }
  if (path.empty()) return std::cerr << usage, 2;
  // One token's products are far too small to split across threads (Eigen's
  // OpenMP GEMM would cost more than it saves); an engine parallelizes across
  // its own pool instead.
  Eigen::setNbThreads(1);
  try {
    const decoder::Model model = decoder::load_llama2c(path);
    const decoder::Config& c = model.config;
    std::cout << path << ": dim " << c.dim << ", hidden " << c.hidden_dim << ", layers "
              << c.n_layers << ", heads " << c.n_heads << " (" << c.n_kv_heads << " kv), vocab "
              << c.vocab_size << ", context " << c.seq_len << "\n";
    decoder::Rng rng(seed);
    const auto start = std::chrono::steady_clock::now();
    const decoder::Sequence sequence = decoder::generate(model, tokens, temperature, rng);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    for (int id : sequence) std::cout << id << ' ';
    const double decoded = static_cast<double>(sequence.size() - 1);
    std::cout << "\n"
              << decoded << " tokens decoded in " << seconds * 1e3 << " ms: " << decoded / seconds
              << " tokens/s (float, one token per step, KV cache)\n";
  } catch (const lowbit::Error& e) {
    std::cerr << "lowbit_decoder: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
