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
#include <random>
#include <string>
#include <vector>

namespace {

using lowbit::io::Dtype;
using lowbit::io::SafetensorsWriter;

struct Shape {
  long layers = 22, hidden = 2048, intermediate = 5632, heads = 32, kv_heads = 4, vocab = 32000;
};

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

void write(const std::string& dir, const Shape& s) {
  std::filesystem::create_directories(dir);
  const long head_dim = s.hidden / s.heads, shards = s.layers + 1;
  nlohmann::json weight_map = nlohmann::json::object();
  std::mt19937 rng(1);
  auto finish = [&](SafetensorsWriter& out, long index) {
    const std::string file = shard_name(index, shards);
    for (const auto& name : out.names()) weight_map[name] = file;
    out.write(dir + "/" + file);
  };
  for (long l = 0; l < s.layers; ++l) {
    SafetensorsWriter out;
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add_random(out, rng, p + "self_attn.q_proj.weight", s.hidden, s.hidden);
    add_random(out, rng, p + "self_attn.k_proj.weight", s.kv_heads * head_dim, s.hidden);
    add_random(out, rng, p + "self_attn.v_proj.weight", s.kv_heads * head_dim, s.hidden);
    add_random(out, rng, p + "self_attn.o_proj.weight", s.hidden, s.hidden);
    add_random(out, rng, p + "mlp.gate_proj.weight", s.intermediate, s.hidden);
    add_random(out, rng, p + "mlp.up_proj.weight", s.intermediate, s.hidden);
    add_random(out, rng, p + "mlp.down_proj.weight", s.hidden, s.intermediate);
    add_ones(out, p + "input_layernorm.weight", s.hidden);
    add_ones(out, p + "post_attention_layernorm.weight", s.hidden);
    finish(out, l + 1);
  }
  SafetensorsWriter out;
  add_random(out, rng, "model.embed_tokens.weight", s.vocab, s.hidden);
  add_random(out, rng, "lm_head.weight", s.vocab, s.hidden);
  add_ones(out, "model.norm.weight", s.hidden);
  finish(out, shards);
  std::ofstream(dir + "/model.safetensors.index.json")
      << nlohmann::json{{"metadata", nlohmann::json::object()}, {"weight_map", weight_map}}.dump(1);
  const nlohmann::json config{{"architectures", {"LlamaForCausalLM"}},
                              {"model_type", "llama"},
                              {"hidden_size", s.hidden},
                              {"intermediate_size", s.intermediate},
                              {"num_hidden_layers", s.layers},
                              {"num_attention_heads", s.heads},
                              {"num_key_value_heads", s.kv_heads},
                              {"vocab_size", s.vocab},
                              {"max_position_embeddings", 2048},
                              {"rms_norm_eps", 1e-5},
                              {"rope_theta", 10000.0},
                              {"hidden_act", "silu"},
                              {"tie_word_embeddings", false},
                              {"torch_dtype", "bfloat16"}};
  std::ofstream(dir + "/config.json") << config.dump(2);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 && argc != 8) {
    std::fprintf(stderr,
                 "usage: random_hf_model DIR [layers hidden intermediate heads kv_heads vocab]\n");
    return 2;
  }
  Shape s;
  if (argc == 8) {
    long* fields[] = {&s.layers, &s.hidden, &s.intermediate, &s.heads, &s.kv_heads, &s.vocab};
    for (int i = 0; i < 6; ++i) *fields[i] = std::atol(argv[i + 2]);
  }
  if (s.layers < 1 || s.hidden < 1 || s.intermediate < 1 || s.heads < 1 || s.kv_heads < 1 ||
      s.vocab < 1 || s.hidden % s.heads != 0 || s.heads % s.kv_heads != 0) {
    std::fprintf(stderr,
                 "random_hf_model: sizes must be positive, heads must divide hidden and "
                 "kv_heads heads\n");
    return 2;
  }
  try {
    write(argv[1], s);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "random_hf_model: %s\n", e.what());
    return 1;
  }
  return 0;
}
