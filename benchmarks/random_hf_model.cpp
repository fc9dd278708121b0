// Writes a LLaMA-shaped Hugging Face model directory with random BF16
// weights (normal, std 0.02; norms 1), one shard per decoder layer, for
// measuring quantize-model's memory and time on a model of real size
// (benchmarks/quantize_model_memory.sh). Not a model anyone should run.
//
//   random_hf_model DIR [layers hidden intermediate heads kv_heads vocab]
//   (default: 22 2048 5632 32 4 32000, TinyLlama-1.1B's shape, 2.2 GB)
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <lowbit/io/safetensors.hpp>
#include <lowbit/model/hf_export.hpp>
#include <random>
#include <string>
#include <vector>

namespace {

using lowbit::io::Dtype;
using lowbit::io::SafetensorsWriter;
namespace model = lowbit::model;

void add_random(SafetensorsWriter& out, std::mt19937& rng, const std::string& name, long rows,
                long cols) {
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> values(static_cast<std::size_t>(rows * cols));
  for (float& v : values) v = normal(rng);
  out.add_floats(name, {rows, cols}, values.data(), values.size(), Dtype::BF16);
}

void add_ones(SafetensorsWriter& out, const std::string& name, long size) {
  const std::vector<float> ones(static_cast<std::size_t>(size), 1.0f);
  out.add_floats(name, {size}, ones.data(), ones.size(), Dtype::BF16);
}

std::string shard_name(long index, long count) {
  char name[64];
  std::snprintf(name, sizeof name, "model-%05ld-of-%05ld.safetensors", index, count);
  return name;
}

// The tensors and config.json Hugging Face's LlamaForCausalLM has, named and
// shaped by the model layer's own definitions (hf_linear_name, linear_rows).
void write(const std::string& dir, const model::Config& c) {
  std::filesystem::create_directories(dir);
  const long shards = c.n_layers + 1;
  nlohmann::json weight_map = nlohmann::json::object();
  std::mt19937 rng(1);
  auto finish = [&](SafetensorsWriter& out, long index) {
    const std::string file = shard_name(index, shards);
    for (const auto& name : out.names()) weight_map[name] = file;
    out.write(dir + "/" + file);
  };
  const auto rows = model::linear_rows(c), cols = model::linear_cols(c);
  for (int l = 0; l < c.n_layers; ++l) {
    SafetensorsWriter out;
    for (model::LinearKind kind : model::kAllLinears)
      add_random(out, rng, model::detail::hf_linear_name(l, kind) + ".weight",
                 rows[model::index(kind)], cols[model::index(kind)]);
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add_ones(out, p + "input_layernorm.weight", c.dim);
    add_ones(out, p + "post_attention_layernorm.weight", c.dim);
    finish(out, l + 1);
  }
  SafetensorsWriter out;
  add_random(out, rng, "model.embed_tokens.weight", c.vocab_size, c.dim);
  add_random(out, rng, "lm_head.weight", c.vocab_size, c.dim);
  add_ones(out, "model.norm.weight", c.dim);
  finish(out, shards);
  std::ofstream(dir + "/model.safetensors.index.json")
      << nlohmann::json{{"metadata", nlohmann::json::object()}, {"weight_map", weight_map}}.dump(1);
  nlohmann::json config = model::hf_llama_config(c, /*tied=*/false);
  config["torch_dtype"] = "bfloat16";
  std::ofstream(dir + "/config.json") << config.dump(2);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 && argc != 8) {
    std::fprintf(stderr,
                 "usage: random_hf_model DIR [layers hidden intermediate heads kv_heads vocab]\n");
    return 2;
  }
  model::Config c;  // TinyLlama-1.1B's shape unless given
  c.n_layers = 22, c.dim = 2048, c.hidden_dim = 5632, c.n_heads = 32, c.n_kv_heads = 4;
  c.vocab_size = 32000, c.seq_len = 2048;
  if (argc == 8) {
    int* fields[] = {&c.n_layers, &c.dim, &c.hidden_dim, &c.n_heads, &c.n_kv_heads, &c.vocab_size};
    for (int i = 0; i < 6; ++i) *fields[i] = std::atoi(argv[i + 2]);
  }
  try {
    model::validate_config(c, "random_hf_model");
  } catch (const lowbit::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
  try {
    write(argv[1], c);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "random_hf_model: %s\n", e.what());
    return 1;
  }
  return 0;
}
