// Hugging Face model directories written by the tests from a llama2.c-style
// model, as transformers' convert_llama_weights_to_hf.py converts Meta's
// checkpoints: Hugging Face tensor names, config.json, and the rows of wq and
// wk permuted by the converter's `permute` so that rotate-half RoPE computes
// what the interleaved RoPE did.
#pragma once

#include <lowbit/io/safetensors.hpp>
#include <lowbit/model/llama.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "model_fixtures.hpp"

namespace lowbit::test {

// The converter's permute(w, n_heads, dim1, dim2):
//   w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)
// Row (h, i, j) of the view (row h * head + 2i + j of w) becomes row (h, j, i)
// of the result (row h * head + j * head/2 + i).
inline MatrixF converter_permute(const MatrixF& w, int n_heads) {
  const Index head = w.rows() / n_heads, half = head / 2;
  MatrixF out(w.rows(), w.cols());
  for (Index h = 0; h < n_heads; ++h)
    for (Index i = 0; i < half; ++i)
      for (Index j = 0; j < 2; ++j) out.row(h * head + j * half + i) = w.row(h * head + 2 * i + j);
  return out;
}

struct HfExport {
  io::Dtype dtype = io::Dtype::F32;
  int shards = 1;  // 1: model.safetensors; more: model-0000k-of-0000n.safetensors + index
};

// config.json of a Llama checkpoint with the model's configuration.
inline nlohmann::json hf_config_json(const model::Model& m) {
  const model::Config& c = m.config;
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_size", c.dim},
          {"intermediate_size", c.hidden_dim},
          {"num_hidden_layers", c.n_layers},
          {"num_attention_heads", c.n_heads},
          {"num_key_value_heads", c.n_kv_heads},
          {"vocab_size", c.vocab_size},
          {"max_position_embeddings", c.seq_len},
          {"rms_norm_eps", c.norm_eps},
          {"rope_theta", c.rope_theta},
          {"bos_token_id", c.bos_token},
          {"hidden_act", "silu"},
          {"tie_word_embeddings", m.classifier.size() == 0},
          {"rope_scaling", nullptr},
          {"torch_dtype", "float32"}};
}

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// The tensors of `m` (interleaved RoPE, llama2.c names) under Hugging Face names.
inline std::vector<std::pair<std::string, MatrixF>> hf_tensors(const model::Model& m) {
  const model::Config& c = m.config;
  std::vector<std::pair<std::string, MatrixF>> tensors{
      {"model.embed_tokens.weight", m.token_embedding}};
  const char* names[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                         "self_attn.o_proj", "mlp.gate_proj",    "mlp.down_proj",
                         "mlp.up_proj"};
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    const model::Layer& layer = m.layers[std::size_t(l)];
    tensors.emplace_back(prefix + "input_layernorm.weight", layer.attention_norm.transpose());
    for (LinearKind kind : model::kAllLinears) {
      MatrixF w = weight(m, l, kind);
      if (kind == LinearKind::wq) w = converter_permute(w, c.n_heads);
      if (kind == LinearKind::wk) w = converter_permute(w, c.n_kv_heads);
      tensors.emplace_back(prefix + names[model::index(kind)] + ".weight", std::move(w));
    }
    tensors.emplace_back(prefix + "post_attention_layernorm.weight", layer.ffn_norm.transpose());
  }
  tensors.emplace_back("model.norm.weight", m.final_norm.transpose());
  if (m.classifier.size() != 0) tensors.emplace_back("lm_head.weight", m.classifier);
  return tensors;
}

// Writes `tensors` (rank 1 when one row) into `dir` as how.shards files.
inline void write_hf_weights(const std::vector<std::pair<std::string, MatrixF>>& tensors,
                             const std::string& dir, const HfExport& how) {
  const std::size_t n = tensors.size(), shards = std::size_t(how.shards);
  nlohmann::json weight_map = nlohmann::json::object();
  for (std::size_t s = 0; s < shards; ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, shards);
    const std::string file = shards == 1 ? "model.safetensors" : name;
    io::SafetensorsWriter out;
    for (std::size_t i = s * n / shards; i < (s + 1) * n / shards; ++i) {
      const auto& [tensor, values] = tensors[i];
      if (values.rows() == 1)
        out.add_vector(tensor, std::vector<float>(values.data(), values.data() + values.size()),
                       how.dtype);
      else
        out.add_matrix(tensor, values, how.dtype);
      weight_map[tensor] = file;
    }
    out.write(dir + "/" + file);
  }
  if (shards > 1)
    write_text(
        dir + "/model.safetensors.index.json",
        nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump(2));
}

inline void write_hf_directory(const model::Model& m, const std::string& dir,
                               const HfExport& how = {}) {
  std::filesystem::create_directories(dir);
  write_text(dir + "/config.json", hf_config_json(m).dump(2));
  write_hf_weights(hf_tensors(m), dir, how);
}

}  // namespace lowbit::test
