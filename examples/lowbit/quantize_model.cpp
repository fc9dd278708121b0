#include "quantize_model.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <lowbit/io/bpdq_format.hpp>
#include <lowbit/io/gptq_format.hpp>
#include <sstream>

#include "options.hpp"
#include "study.hpp"

namespace lowbit::cli {
namespace {

std::atomic<bool> interrupted{false};
extern "C" void on_interrupt(int) { interrupted = true; }

// Names as in Meta's LLaMA checkpoints (llama2.c's export.py reads these).
std::string linear_name(int layer, decoder::LinearKind kind) {
  const std::string block = decoder::index(kind) <= decoder::index(decoder::LinearKind::wo)
                                ? ".attention."
                                : ".feed_forward.";
  return "layers." + std::to_string(layer) + block + decoder::name(kind);
}

// One line per step when stderr is not a terminal; a redrawn bar when it is.
class Progress {
 public:
  explicit Progress(int total) : total_(total), tty_(isatty(fileno(stderr)) != 0) {}
  void step(const std::string& what) {
    const double elapsed = seconds();
    const double left = done_ == 0 ? 0.0 : elapsed / done_ * (total_ - done_);
    char line[160];
    if (tty_) {
      constexpr int width = 30;
      const int filled = width * done_ / total_;
      std::snprintf(line, sizeof line, "\r[%s%s] %3d%%  %-24s  %5.1fs left  ",
                    std::string(static_cast<std::size_t>(filled), '#').c_str(),
                    std::string(static_cast<std::size_t>(width - filled), '.').c_str(),
                    100 * done_ / total_, what.c_str(), left);
    } else {
      std::snprintf(line, sizeof line, "[%d/%d] %s (%.1fs elapsed, %.1fs left)\n", done_ + 1, total_,
                    what.c_str(), elapsed, left);
    }
    std::cerr << line << std::flush;
    ++done_;
  }
  void finish() {
    if (tty_) std::cerr << "\r" << std::string(80, ' ') << "\r";
    std::cerr << "quantized " << total_ << " groups of linears in " << seconds() << " s\n";
  }

 private:
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  int total_, done_ = 0;
  bool tty_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// Writes `text` to `path` through a temporary file and a rename.
void write_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp" + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::binary);
    out << text;
    if (!out.flush()) {
      std::filesystem::remove(tmp);
      detail::fail("quantize-model: cannot write ", tmp);
    }
  }
  std::filesystem::rename(tmp, path);
}

std::string config_json(const decoder::Config& c, int original_hidden, const decoder::QuantSpec& s,
                        const std::string& format, double bits_per_weight) {
  std::ostringstream j;
  j << "{\n  \"quant_method\": \"" << format << "\",\n  \"quantizer\": \"" << s.method
    << "\",\n  \"bits\": " << s.bits << ",\n  \"group_size\": " << s.group_size
    << ",\n  \"desc_act\": " << (s.act_order ? "true" : "false")
    << ",\n  \"bits_per_weight\": " << bits_per_weight << ",\n  \"dim\": " << c.dim
    << ",\n  \"hidden_dim\": " << original_hidden << ",\n  \"hidden_dim_padded\": " << c.hidden_dim
    << ",\n  \"n_layers\": " << c.n_layers << ",\n  \"n_heads\": " << c.n_heads
    << ",\n  \"n_kv_heads\": " << c.n_kv_heads << ",\n  \"vocab_size\": " << c.vocab_size
    << ",\n  \"seq_len\": " << c.seq_len << "\n}\n";
  return j.str();
}

}  // namespace

// lowbit quantize-model --model CKPT.bin --method M --bits B --group-size G
//                       --format gptq|bpdq --out OUT.safetensors [--act-order]
//                       [--calibration N] [--threads N]
int quantize_model_command(const std::vector<std::string>& args) {
  const Options o(args,
                  {"model", "method", "bits", "group-size", "format", "out", "act-order",
                   "calibration", "threads"},
                  "quantize-model");
  const std::string format = o.text("format", "gptq");
  if (format != "gptq" && format != "bpdq")
    throw UsageError("quantize-model: --format must be gptq or bpdq, got '" + format + "'");
  const decoder::QuantSpec spec{o.text("method", "gptq"), o.integer("bits", 4),
                                o.integer("group-size", 32), o.flag("act-order")};
  if (std::find(decoder::checkpoint_methods().begin(), decoder::checkpoint_methods().end(),
                spec.method) == decoder::checkpoint_methods().end())
    throw UsageError("quantize-model: --method '" + spec.method +
                     "' has no plain checkpoint form; use one of: " +
                     [] {
                       std::string s;
                       for (const auto& m : decoder::checkpoint_methods()) s += (s.empty() ? "" : ", ") + m;
                       return s;
                     }());
  if (format == "gptq" && spec.method == "bpdq")
    throw UsageError("quantize-model: bpdq results are bit planes on a variable grid; use --format bpdq");
  if (format == "bpdq" && spec.act_order)
    throw UsageError("quantize-model: --act-order groups need a g_idx, which the bpdq format cannot hold");
  const int sequences = o.integer("calibration", 32);
  if (sequences < 1) throw UsageError("quantize-model: --calibration must be >= 1");
  const std::string out_path = o.text("out");
  Eigen::setNbThreads(1);

  const decoder::Model loaded = decoder::load_llama2c(o.text("model"));
  const decoder::Model model = decoder::pad_hidden(loaded, 64);
  const std::vector<decoder::Sequence> calibration =
      decoder::sample_sequences(model, sequences, 64, 1.0f, 1);

  io::SafetensorsWriter out;
  out.add_matrix("tok_embeddings.weight", model.token_embedding);
  out.add_vector("norm.weight", std::vector<float>(model.final_norm.data(), model.final_norm.data() + model.final_norm.size()), io::Dtype::F32);
  Progress progress(model.config.n_layers * static_cast<int>(decoder::linear_groups().size()));
  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);
  const decoder::QuantizedModel q = decoder::quantize_model(
      model, calibration, spec,
      [&](int layer, const std::string& names) {
        if (interrupted) detail::fail("interrupted: nothing was written");
        progress.step("layer " + std::to_string(layer) + " " + names);
      },
      [&](int layer, decoder::LinearKind kind, const decoder::QuantizedLinear& r) {
        const std::string name = linear_name(layer, kind);
        if (format == "gptq")
          io::add_gptq_linear(out, name, *r.uniform);
        else
          io::add_bpdq_linear(out, name, *r.planes, io::Dtype::F16);
      });
  progress.finish();
  for (int l = 0; l < model.config.n_layers; ++l) {
    const decoder::Layer& layer = q.model.layers[static_cast<std::size_t>(l)];
    const std::string prefix = "layers." + std::to_string(l);
    for (const auto& [name, norm] : {std::pair{".attention_norm.weight", &layer.attention_norm},
                                     std::pair{".ffn_norm.weight", &layer.ffn_norm}})
      out.add_vector(prefix + name, std::vector<float>(norm->data(), norm->data() + norm->size()),
                     io::Dtype::F32);
  }
  const std::string config =
      config_json(model.config, loaded.config.hidden_dim, spec, format, q.bits_per_weight);
  out.set_metadata("quantization_config", config);
  if (interrupted) detail::fail("interrupted: nothing was written");
  out.write(out_path);  // a temporary file, then a rename
  std::filesystem::path json_path(out_path);
  json_path.replace_extension(".quantize_config.json");
  write_atomically(json_path.string(), config);
  std::cerr << "wrote " << out_path << " and " << json_path.string() << " (" << q.bits_per_weight
            << " bits per weight over the linears)\n";
  return 0;
}

}  // namespace lowbit::cli
