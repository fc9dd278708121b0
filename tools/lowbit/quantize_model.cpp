#include "quantize_model.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <lowbit/io/bpdq_format.hpp>
#include <lowbit/io/gptq_format.hpp>
#include <lowbit/model/llama2c.hpp>
#include <lowbit/model/sequential_quantization.hpp>
#include <sstream>

#include "interrupts.hpp"
#include "methods.hpp"
#include "options.hpp"

namespace lowbit::cli {
namespace {

// Names as in Meta's LLaMA checkpoints (llama2.c's export.py reads these).
std::string linear_name(int layer, model::LinearKind kind) {
  const std::string block =
      model::index(kind) <= model::index(model::LinearKind::wo) ? ".attention." : ".feed_forward.";
  return "layers." + std::to_string(layer) + block + model::name(kind);
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
      std::snprintf(line, sizeof line, "[%d/%d] %s (%.1fs elapsed, %.1fs left)\n", done_ + 1,
                    total_, what.c_str(), elapsed, left);
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

std::string config_json(const model::Config& c, int original_hidden, const model::QuantSpec& s,
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

// The command line, checked before the model is loaded.
struct ModelJob {
  std::string model, out, format;
  model::QuantSpec spec;
  int sequences = 0;
};

ModelJob parse_job(const Options& o) {
  ModelJob job{o.text("model"),
               o.text("out"),
               o.text("format"),
               {o.text("method"), o.integer("bits"), o.integer("group-size"), o.flag("act-order")},
               o.integer("calibration")};
  if (job.format == "gptq" && job.spec.bits != 2 && job.spec.bits != 3 && job.spec.bits != 4 &&
      job.spec.bits != 8)
    throw UsageError(
        "quantize-model: option --bits: the gptq format packs 2, 3, 4 or 8 bits, got " +
        std::to_string(job.spec.bits));
  const std::vector<std::string>& methods = model::checkpoint_methods();
  if (std::find(methods.begin(), methods.end(), job.spec.method) == methods.end()) {
    std::string known;
    for (const std::string& m : methods) known += (known.empty() ? "" : ", ") + m;
    throw UsageError("quantize-model: --method '" + job.spec.method +
                     "' has no plain checkpoint form; use one of: " + known);
  }
  if (job.format == "gptq" && job.spec.method == "bpdq")
    throw UsageError(
        "quantize-model: bpdq results are bit planes on a variable grid; use --format bpdq");
  if (job.spec.method == "bpdq" && job.spec.bits > 4)
    throw UsageError("quantize-model: option --bits: bpdq takes 1..4 bit planes, got " +
                     std::to_string(job.spec.bits));
  if (job.format == "bpdq" && job.spec.act_order)
    throw UsageError(
        "quantize-model: --act-order groups need a g_idx, which the bpdq format cannot hold");
  return job;
}

void add_vector(io::SafetensorsWriter& out, const std::string& name, const VectorF& v) {
  out.add_vector(name, std::vector<float>(v.data(), v.data() + v.size()), io::Dtype::F32);
}

// Quantizes the model one layer at a time: its linears are written as they
// are quantized, its norms (which the checkpoint methods leave alone) at the end.
double quantize_layers(const model::Model& padded, const ModelJob& job,
                       io::SafetensorsWriter& out) {
  model::SequentialQuantizer quantizer(
      padded.config,
      model::embed_sequences(padded, model::sample_sequences(padded, job.sequences, 64, 1.0f, 1)),
      job.spec);
  Progress progress(padded.config.n_layers * static_cast<int>(model::linear_groups().size()));
  std::vector<std::pair<VectorF, VectorF>> norms;  // attention and MLP norm per layer
  for (const model::Layer& layer : padded.layers) {
    const model::Layer quantized = quantizer.quantize_next(
        layer,
        [&](int l, const std::string& names) {
          progress.step("layer " + std::to_string(l) + " " + names);
        },
        [&](int l, model::LinearKind kind, const model::QuantizedLinear& r) {
          if (job.format == "gptq")
            io::add_gptq_linear(out, linear_name(l, kind), *r.uniform);
          else
            io::add_bpdq_linear(out, linear_name(l, kind), *r.planes, io::Dtype::F16);
        });
    norms.emplace_back(quantized.attention_norm, quantized.ffn_norm);
  }
  progress.finish();
  for (std::size_t l = 0; l < norms.size(); ++l) {
    const std::string prefix = "layers." + std::to_string(l);
    add_vector(out, prefix + ".attention_norm.weight", norms[l].first);
    add_vector(out, prefix + ".ffn_norm.weight", norms[l].second);
  }
  return quantizer.bits_per_weight();
}

int run_quantize_model(const Options& options) {
  const ModelJob job = parse_job(options);
  // Decoding-size products and small layers: more threads cost more than they
  // save unless asked for (the results are the same for any thread count).
  apply_threads(options);
  const model::Model loaded = model::load_llama2c(job.model);
  const model::Model padded = model::pad_hidden(loaded, 64);

  io::SafetensorsWriter out;
  out.add_matrix("tok_embeddings.weight", padded.token_embedding);
  if (padded.classifier.size() != 0) out.add_matrix("output.weight", padded.classifier);
  add_vector(out, "norm.weight", padded.final_norm);
  const double bits_per_weight = quantize_layers(padded, job, out);
  const std::string config =
      config_json(padded.config, loaded.config.hidden_dim, job.spec, job.format, bits_per_weight);
  out.set_metadata("quantization_config", config);
  std::filesystem::path json_path(job.out);
  json_path.replace_extension(".quantize_config.json");
  // Both files are written before either is renamed into place: if one
  // cannot be, neither appears.
  io::StagedFile checkpoint(job.out, out.bytes());
  io::StagedFile sidecar(json_path.string(),
                         std::vector<unsigned char>(config.begin(), config.end()));
  {
    const HoldInterrupts hold;
    checkpoint.commit();
    sidecar.commit();
  }
  std::cerr << "wrote " << job.out << " and " << json_path.string() << " (" << bits_per_weight
            << " bits per weight over the linears)\n";
  return 0;
}

}  // namespace

Command quantize_model_command() {
  return {"quantize-model",
          "every linear of a llama2.c checkpoint quantized sequentially (each layer calibrated\n"
          "on the outputs of the quantized layers before it, with --calibration sequences of 64\n"
          "tokens the model samples itself) and written as one safetensors checkpoint in the\n"
          "GPTQ v1 or the BPDQ format, with quantization_config in its metadata and beside it\n"
          "(OUT.quantize_config.json). The hidden dimension is padded with zero units to a\n"
          "multiple of 64 (exact). Methods: the ones whose result is a plain uniform or\n"
          "bit-plane linear.",
          {required_option("model"), required_option("out"), option("method", "gptq"),
           option("bits", "4"), option("group-size", "32"), option("format", "gptq"),
           option("act-order"), option("calibration", "32"), option("threads", "1")},
          run_quantize_model};
}

}  // namespace lowbit::cli
