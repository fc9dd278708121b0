// lowbit_decoder: a LLaMA-style decoder for llama2.c checkpoints, Hugging
// Face model directories and LLaMA GGUF files.
//
//   lowbit_decoder MODEL [--tokens N] [--temperature T] [--seed S]
//       generates token ids and reports the speed: float models in float, a
//       GGUF file's quantized linears on the kernels;
//   lowbit_decoder MODEL --study [--methods M1,M2,...] [--bits B1,B2,...]
//                  [--types T1,T2,...] [--group-size G] [--tsv FILE]
//                  [--task-temperature T] [--eval-temperature T]
//       the end-to-end quantization study: every method at every bit width it
//       supports, one table (and the same rows as TSV for plots).
//
// The model, its forward pass and the sequential quantization are the
// library's (lowbit/model/); this program adds sampling from the command line
// and the study's metrics (evaluation.hpp). There is no tokenizer: it works on
// token ids (1 is BOS).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include <filesystem>
#include <lowbit/model/gguf_model.hpp>
#include <lowbit/model/hf.hpp>
#include <lowbit/model/llama2c.hpp>
#include <lowbit/model/sequential_quantization.hpp>

#include "evaluation.hpp"

namespace {

std::vector<std::string> split(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream in(list);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

struct Options {
  std::string path;
  int tokens = 256;
  float temperature = 0.8f;
  unsigned long long seed = 42;
  bool study = false;
  std::vector<std::string> methods = lowbit::model::method_names();
  std::vector<int> bits{2, 3, 4};
  std::vector<lowbit::GgmlType> types;  // for the ggml methods, instead of bits
  int group_size = 32;
  std::string tsv;
  float task_temperature = -1;  // TACQ's task: < 0 the calibration sequences
  float eval_temperature = 1;
};

void generate(const lowbit::model::Model& model, const Options& o) {
  lowbit::model::Rng rng(o.seed);
  const auto start = std::chrono::steady_clock::now();
  const lowbit::model::Sequence sequence =
      lowbit::model::generate(model, o.tokens, o.temperature, rng);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (int id : sequence) std::cout << id << ' ';
  const double decoded = static_cast<double>(sequence.size() - 1);
  std::cout << "\n"
            << decoded << " tokens decoded in " << seconds * 1e3 << " ms: " << decoded / seconds
            << " tokens/s (one token per step, KV cache, one thread)\n";
}

// A directory is a Hugging Face model, *.gguf a GGUF file (its linears
// quantized already, so not a study's starting point), anything else llama2.c.
lowbit::model::Model load_model(const std::string& path, bool study) {
  namespace model = lowbit::model;
  if (std::filesystem::is_directory(path)) return model::load_all(model::open_hf(path));
  if (std::filesystem::path(path).extension() == ".gguf") {
    lowbit::detail::require(!study, path, ": --study starts from a float model, not a GGUF file");
    return model::load_all(model::open_gguf(path));
  }
  return model::load_llama2c(path);
}

// GPTQ runs with act-order (desc_act), its better setting.
// Calibration: 32 sequences of 64 tokens sampled at temperature 1 (seed 1);
// evaluation: 32 other sequences of 128 tokens (seed 2, --eval-temperature).
// TACQ's task gradients: next-token loss on the calibration sequences, or with
// --task-temperature on 32 sequences of 64 tokens sampled at that temperature
// (seed 3), so the task can differ from the evaluation text. The hidden dimension
// is padded to a multiple of 64 so every group size up to 64 divides it.
// The ggml methods run at each --types entry when given, else at each --bits
// (the K-quant of that width).
void study(const lowbit::model::Model& loaded, const Options& o) {
  using namespace decoder;
  using namespace lowbit::model;
  const Model model = pad_hidden(loaded, 64);
  const std::vector<Sequence> calibration = sample_sequences(model, 32, 64, 1.0f, 1);
  const std::vector<Sequence> heldout = sample_sequences(model, 32, 128, o.eval_temperature, 2);
  const std::vector<Sequence> task =
      o.task_temperature < 0 ? calibration : sample_sequences(model, 32, 64, o.task_temperature, 3);
  const std::vector<MatrixF> reference = sequence_logits(model, heldout);
  std::ofstream tsv;
  if (!o.tsv.empty()) {
    tsv.open(o.tsv);
    require(bool(tsv), "--tsv: cannot write ", o.tsv);
    tsv << "method\tbits\tbits_per_weight\tkl\ttop1\tperplexity\ttokens_per_s\n";
  }
  const auto row = [&](const std::string& method, const std::string& bits, double bpw,
                       const Metrics& m, double speed) {
    std::printf("| %-18s | %4s | %6.2f | %8.4f | %6.3f | %9.2f | %8.0f |\n", method.c_str(),
                bits.c_str(), bpw, m.kl, m.top1, m.perplexity, speed);
    std::fflush(stdout);
    if (tsv)
      tsv << method << '\t' << bits << '\t' << bpw << '\t' << m.kl << '\t' << m.top1 << '\t'
          << m.perplexity << '\t' << speed << '\n';
  };
  std::printf("group size %d; calibration %zu x %zu tokens; evaluation %zu x %zu tokens\n\n",
              o.group_size, calibration.size(), calibration[0].size(), heldout.size(),
              heldout[0].size());
  std::printf(
      "| method             | bits | bits/w |       KL |  top-1 |       ppl | tokens/s |\n"
      "|--------------------|------|--------|----------|--------|-----------|----------|\n");
  row("float", "32", 32.0, compare(reference, reference, heldout), tokens_per_second(model, 256));
  const auto run = [&](const QuantSpec& spec, const std::string& label) {
    const QuantizedModel q =
        quantize_model_for_task(model, calibration, spec, next_token_task(task));
    row(spec.method, label, q.bits_per_weight,
        compare(reference, sequence_logits(q.model, heldout), heldout),
        tokens_per_second(q.model, 256));
  };
  for (const std::string& method : o.methods) {
    if (is_ggml(method) && !o.types.empty()) {
      for (lowbit::GgmlType type : o.types)
        run({method, 4, o.group_size, true, type}, lowbit::ggml_type_name(type));
      continue;
    }
    const std::vector<int> widths = is_w8a8(method) ? std::vector<int>{8} : o.bits;
    for (int bits : widths) run({method, bits, o.group_size, true}, std::to_string(bits));
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string usage =
      "usage: lowbit_decoder MODEL [--tokens N] [--temperature T] [--seed S]\n"
      "       (MODEL: a llama2.c file, a Hugging Face directory or a LLaMA .gguf)\n"
      "       lowbit_decoder MODEL --study [--methods M1,M2,...] [--bits B1,B2,...]\n"
      "                      [--types q4_0,q8_0,...] [--group-size G] [--tsv FILE]\n"
      "                      [--task-temperature T] [--eval-temperature T]\n";
  Options o;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      const bool has_value = i + 1 < argc;
      if (arg == "--tokens" && has_value)
        o.tokens = std::atoi(argv[++i]);
      else if (arg == "--temperature" && has_value)
        o.temperature = std::strtof(argv[++i], nullptr);
      else if (arg == "--seed" && has_value)
        o.seed = std::strtoull(argv[++i], nullptr, 10);
      else if (arg == "--study")
        o.study = true;
      else if (arg == "--methods" && has_value)
        o.methods = split(argv[++i]);
      else if (arg == "--bits" && has_value) {
        o.bits.clear();
        for (const std::string& b : split(argv[++i])) o.bits.push_back(std::stoi(b));
      } else if (arg == "--types" && has_value) {
        for (const std::string& t : split(argv[++i])) {
          const std::optional<lowbit::GgmlType> type = lowbit::parse_ggml_type(t);
          if (!type || !lowbit::find_ggml_block_format(*type))
            return std::cerr << "lowbit_decoder: --types: '" << t << "' is not a block type\n", 2;
          o.types.push_back(*type);
        }
      } else if (arg == "--group-size" && has_value)
        o.group_size = std::stoi(argv[++i]);
      else if (arg == "--task-temperature" && has_value)
        o.task_temperature = std::stof(argv[++i]);
      else if (arg == "--eval-temperature" && has_value)
        o.eval_temperature = std::stof(argv[++i]);
      else if (arg == "--tsv" && has_value)
        o.tsv = argv[++i];
      else if (arg == "--help" || arg == "-h")
        return std::cout << usage, 0;
      else if (o.path.empty() && arg.rfind("--", 0) != 0)
        o.path = arg;
      else
        return std::cerr << "lowbit_decoder: unexpected argument '" << arg << "'\n" << usage, 2;
    }
  } catch (const std::exception&) {
    return std::cerr << "lowbit_decoder: a numeric option has a non-numeric value\n" << usage, 2;
  }
  if (o.path.empty()) return std::cerr << usage, 2;
  // One token's products are far too small to split across threads (Eigen's
  // OpenMP GEMM would cost more than it saves); an engine parallelizes across
  // its own pool instead.
  Eigen::setNbThreads(1);
  try {
    for (const std::string& m : o.methods) lowbit::model::is_w8a8(m);  // unknown names fail here
    const lowbit::model::Model model = load_model(o.path, o.study);
    const lowbit::model::Config& c = model.config;
    std::cout << o.path << ": dim " << c.dim << ", hidden " << c.hidden_dim << ", layers "
              << c.n_layers << ", heads " << c.n_heads << " (" << c.n_kv_heads << " kv), vocab "
              << c.vocab_size << ", context " << c.seq_len << "\n";
    if (o.study)
      study(model, o);
    else
      generate(model, o);
  } catch (const lowbit::Error& e) {
    std::cerr << "lowbit_decoder: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
