// Loads a Hugging Face model directory of the LLaMA family
// (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM): config.json and
// the weights in model.safetensors or in the shards model.safetensors.index.json
// lists (F32, F16, BF16 or F64), memory-mapped and read one layer at a time.
//
// The model keeps Hugging Face's conventions (rope.hpp's half pairing, the
// rows of q_proj and k_proj as stored) and its extras: head_dim other than
// hidden/heads, q/k/v (and o, MLP) biases, tied or separate lm_head, linear
// and llama3 rope scaling. A sliding attention window limits the context
// (Config::seq_len) to the window, within which the model is exact.
//
// Quantized checkpoints (config.json's quantization_config) load onto the
// bit-plane kernel, one linear at a time: GPTQ ("gptq" v1 or "gptq_v2" zero
// points; 2, 3, 4 or 8 bits; act-order g_idx, sym or not), AWQ's GEMM layout
// (4 bits, zero points) and BPDQ's planes and coefficients. A linear's
// tensors must sit in one shard.
//
// Every file is treated as hostile: a missing or mistyped config field, an
// unsupported architecture or rope scaling, an index naming a file outside
// the directory, a missing shard or tensor, a tensor whose dtype or shape
// disagrees with the configuration, non-finite weights all throw
// lowbit::Error naming the file and the field or tensor.
//
// Needs nlohmann/json (Debian: nlohmann-json3-dev), as io/safetensors.hpp.
#pragma once

#include <algorithm>
#include <array>
#include <cctype>
#include <cfloat>
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "lowbit/core/error.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/io/awq_format.hpp"
#include "lowbit/io/bpdq_format.hpp"
#include "lowbit/io/file_bytes.hpp"
#include "lowbit/io/gptq_format.hpp"
#include "lowbit/io/safetensors.hpp"
#include "lowbit/model/llama.hpp"
#include "lowbit/model/quantized_linear.hpp"

namespace lowbit::model {

namespace detail {

// A JSON file of the model directory: a regular file holding one JSON object.
inline nlohmann::json read_json_object(const std::string& path) {
  const io::MappedBytes bytes = io::MappedBytes::map(path);
  const char* text = reinterpret_cast<const char*>(bytes.data());
  lowbit::detail::require(
      io::detail::json_nesting_depth(text, bytes.size()) <= io::detail::kMaxJsonDepth, path,
      ": JSON is nested deeper than ", io::detail::kMaxJsonDepth, " levels");
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text, text + bytes.size());
  } catch (const nlohmann::json::exception& e) {
    lowbit::detail::fail(path, ": malformed JSON (", e.what(), ")");
  }
  lowbit::detail::require(json.is_object(), path, ": expected a JSON object");
  return json;
}

// The fields of config.json, each checked for its type; absent or null
// optional fields take `fallback`.
class ConfigFields {
 public:
  ConfigFields(nlohmann::json json, std::string path, std::string prefix = "")
      : json_(std::move(json)), path_(std::move(path)), prefix_(std::move(prefix)) {}

  bool present(const std::string& key) const {
    return json_.contains(key) && !json_.at(key).is_null();
  }
  const nlohmann::json& at(const std::string& key) const {
    lowbit::detail::require(present(key), path_, ": field '", prefix_, key, "' is missing");
    return json_.at(key);
  }
  int integer(const std::string& key, std::optional<int> fallback = std::nullopt) const {
    if (fallback && !present(key)) return *fallback;
    const nlohmann::json& v = at(key);
    // Read as its own type: an unsigned value above INT64_MAX would wrap to a
    // negative int64, and a float or a string must not be converted at all.
    bool in_range = false;
    if (v.is_number_unsigned())
      in_range = v.get<std::uint64_t>() <= INT32_MAX;
    else if (v.is_number_integer())
      in_range = v.get<std::int64_t>() >= INT32_MIN && v.get<std::int64_t>() <= INT32_MAX;
    lowbit::detail::require(in_range, path_, ": field '", prefix_, key,
                            "' must be an integer, got ", v.dump());
    return v.get<int>();
  }
  float number(const std::string& key, std::optional<float> fallback = std::nullopt) const {
    if (fallback && !present(key)) return *fallback;
    const nlohmann::json& v = at(key);
    // 1e300 would not fit a float.
    const double value = v.is_number() ? v.get<double>() : 0.0;
    lowbit::detail::require(v.is_number() && std::abs(value) <= FLT_MAX, path_, ": field '",
                            prefix_, key, "' must be a number (finite as a float), got ", v.dump());
    return v.get<float>();
  }
  bool boolean(const std::string& key, bool fallback) const {
    if (!present(key)) return fallback;
    const nlohmann::json& v = at(key);
    lowbit::detail::require(v.is_boolean(), path_, ": field '", prefix_, key,
                            "' must be true or false, got ", v.dump());
    return v.get<bool>();
  }
  std::string text(const std::string& key, const std::string& fallback) const {
    if (!present(key)) return fallback;
    const nlohmann::json& v = at(key);
    lowbit::detail::require(v.is_string(), path_, ": field '", prefix_, key,
                            "' must be a string, got ", v.dump());
    return v.get<std::string>();
  }
  // A nested object, whose fields are reported as 'rope_scaling.factor'.
  ConfigFields object(const std::string& key) const {
    const nlohmann::json& v = at(key);
    lowbit::detail::require(v.is_object(), path_, ": field '", prefix_, key,
                            "' must be an object, got ", v.dump());
    return ConfigFields(v, path_, prefix_ + key + ".");
  }

 private:
  nlohmann::json json_;
  std::string path_, prefix_;
};

inline RopeScaling hf_rope_scaling(const ConfigFields& f, const std::string& path) {
  RopeScaling scaling;
  if (!f.present("rope_scaling")) return scaling;
  const ConfigFields s = f.object("rope_scaling");
  const std::string type = s.text("rope_type", s.text("type", "default"));
  if (type == "default") return scaling;
  lowbit::detail::require(type == "linear" || type == "llama3", path,
                          ": field 'rope_scaling.rope_type' is '", type,
                          "'; supported: default, linear, llama3");
  scaling.factor = s.number("factor");
  if (type == "linear") {
    scaling.type = RopeScaling::Type::linear;
  } else {
    scaling.type = RopeScaling::Type::llama3;
    scaling.low_freq_factor = s.number("low_freq_factor");
    scaling.high_freq_factor = s.number("high_freq_factor");
    scaling.original_max_positions = s.integer("original_max_position_embeddings");
  }
  lowbit::detail::require(
      scaling.factor > 0 && scaling.low_freq_factor > 0 &&
          scaling.high_freq_factor > scaling.low_freq_factor && scaling.original_max_positions > 0,
      path, ": field 'rope_scaling' needs factor > 0, high_freq_factor > low_freq_factor > 0 and ",
      "original_max_position_embeddings > 0");
  return scaling;
}

// How the linears are stored: quantization_config's method ("" for float
// weights), its bits, and GPTQ's zero-point format.
struct HfLinearStorage {
  std::string method;
  int bits = 0;
  bool gptq_v2 = false;
};

inline HfLinearStorage read_hf_linear_storage(const ConfigFields& config, const std::string& path) {
  using lowbit::detail::require;
  HfLinearStorage q;
  if (!config.present("quantization_config")) return q;
  const ConfigFields f = config.object("quantization_config");
  q.method = f.text("quant_method", "");
  q.bits = f.integer("bits");
  require(!f.boolean("lm_head", false), path,
          ": field 'quantization_config.lm_head' is true; a quantized lm_head is not supported");
  if (q.method == "gptq") {
    const std::string format = f.text("checkpoint_format", "gptq");
    require(format == "gptq" || format == "gptq_v2", path,
            ": field 'quantization_config.checkpoint_format' is '", format,
            "'; supported: gptq, gptq_v2");
    q.gptq_v2 = format == "gptq_v2";
    io::detail::require_gptq_bits(q.bits, path + ": field 'quantization_config.bits'");
  } else if (q.method == "awq") {
    std::string version = f.text("version", "gemm");
    std::transform(version.begin(), version.end(), version.begin(),
                   [](unsigned char ch) { return char(std::tolower(ch)); });
    require(version == "gemm", path, ": field 'quantization_config.version' is '", version,
            "'; supported: gemm");
    require(q.bits == 4, path, ": field 'quantization_config.bits' is ", q.bits,
            "; AWQ's GEMM layout holds 4");
    require(f.boolean("zero_point", true), path,
            ": field 'quantization_config.zero_point' is false; supported: true");
  } else if (q.method == "bpdq") {  // planes from the tensors; bits is the initial grid
    const std::string format = f.text("checkpoint_format", "bpdq");
    require(format == "bpdq", path, ": field 'quantization_config.checkpoint_format' is '", format,
            "'; supported for bpdq: bpdq");
  } else {
    lowbit::detail::fail(path, ": field 'quantization_config.quant_method' is '", q.method,
                         "'; supported: gptq, awq, bpdq");
  }
  return q;
}

// Which linears carry biases, by architecture and its flags; how they are stored.
struct HfModel {
  Config config;
  bool tied = false;
  std::array<bool, kLinearsPerLayer> bias{};
  HfLinearStorage quantization;
};

inline HfModel read_hf_config(const std::string& path) {
  const ConfigFields f(read_json_object(path), path);
  const nlohmann::json& architectures = f.at("architectures");
  lowbit::detail::require(
      architectures.is_array() && !architectures.empty() && architectures[0].is_string(), path,
      ": field 'architectures' must be a list of names, got ", architectures.dump());
  const std::string arch = architectures[0].get<std::string>();
  lowbit::detail::require(
      arch == "LlamaForCausalLM" || arch == "MistralForCausalLM" || arch == "Qwen2ForCausalLM",
      path, ": field 'architectures' names ", arch,
      "; supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM");
  const std::string activation = f.text("hidden_act", "silu");
  lowbit::detail::require(activation == "silu", path, ": field 'hidden_act' is '", activation,
                          "'; supported: silu");
  lowbit::detail::require(f.number("partial_rotary_factor", 1.0f) == 1.0f, path,
                          ": field 'partial_rotary_factor' must be 1 (rotary over whole heads)");

  HfModel hf;
  Config& c = hf.config;
  c.dim = f.integer("hidden_size");
  c.hidden_dim = f.integer("intermediate_size");
  c.n_layers = f.integer("num_hidden_layers");
  c.n_heads = f.integer("num_attention_heads");
  c.n_kv_heads = f.integer("num_key_value_heads", c.n_heads);
  c.vocab_size = f.integer("vocab_size");
  c.seq_len = f.integer("max_position_embeddings");
  c.head_dim = f.integer("head_dim", 0);
  c.norm_eps = f.number("rms_norm_eps", 1e-6f);
  c.rope_theta = f.number("rope_theta", 10000.0f);
  c.bos_token = f.integer("bos_token_id", 1);
  c.rope_style = RopeStyle::half;
  c.rope_scaling = hf_rope_scaling(f, path);
  // Within the window, sliding-window attention is full attention.
  const bool sliding = arch == "MistralForCausalLM" || f.boolean("use_sliding_window", false);
  if (sliding && f.present("sliding_window"))
    c.seq_len = std::min(c.seq_len, f.integer("sliding_window"));
  hf.tied = f.boolean("tie_word_embeddings", false);
  const bool attention_bias = arch == "LlamaForCausalLM" && f.boolean("attention_bias", false);
  const bool mlp_bias = arch == "LlamaForCausalLM" && f.boolean("mlp_bias", false);
  for (LinearKind k : kAllLinears) {
    const bool attention = index(k) <= index(LinearKind::wo);
    hf.bias[index(k)] = attention ? attention_bias : mlp_bias;
  }
  if (arch == "Qwen2ForCausalLM")
    for (LinearKind k : {LinearKind::wq, LinearKind::wk, LinearKind::wv}) hf.bias[index(k)] = true;
  hf.quantization = read_hf_linear_storage(f, path);
  validate_config(c, path);
  return hf;
}

// Hugging Face's name of a linear: model.layers.L.self_attn.q_proj and so on.
inline std::string hf_linear_name(int layer, LinearKind kind) {
  static const char* const names[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                      "self_attn.o_proj", "mlp.gate_proj",    "mlp.down_proj",
                                      "mlp.up_proj"};
  return "model.layers." + std::to_string(layer) + "." + names[index(kind)];
}

// The tensors of the directory, by name, in the shard that holds each.
class HfTensors {
 public:
  explicit HfTensors(const std::string& dir) {
    const std::string index_path = dir + "/model.safetensors.index.json";
    index_path_ = index_path;
    if (!std::filesystem::exists(index_path)) {
      shards_.emplace_back(dir + "/model.safetensors");
      return;
    }
    const nlohmann::json index = read_json_object(index_path);
    lowbit::detail::require(index.contains("weight_map") && index["weight_map"].is_object(),
                            index_path, ": field 'weight_map' must be an object");
    std::map<std::string, std::size_t> shard_of_file;
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      lowbit::detail::require(it.value().is_string(), index_path, ": weight_map entry '", it.key(),
                              "' must be a file name, got ", it.value().dump());
      const std::string file = it.value().get<std::string>();
      // A plain name: nothing outside the directory, however the path is spelled.
      lowbit::detail::require(!file.empty() && file != "." && file != ".." &&
                                  file.find('/') == std::string::npos &&
                                  file.find('\\') == std::string::npos,
                              index_path, ": weight_map entry '", it.key(), "' names '", file,
                              "', not a file inside the model directory");
      auto [at, added] = shard_of_file.emplace(file, shards_.size());
      if (added) shards_.emplace_back(dir + "/" + file);
      shard_.emplace(it.key(), at->second);
    }
  }

  // A float tensor of exactly `shape`, checked finite; `what` says what the
  // configuration expects it to be.
  std::vector<float> read(const std::string& name, const std::vector<std::int64_t>& shape) const {
    const io::SafetensorsReader& file = checked(name, shape);
    std::vector<float> values = file.floats(name);
    file.release(name);  // converted: the mapped bytes need not stay resident
    for (float v : values)
      lowbit::detail::require(std::isfinite(v), file.source(), ": tensor '", name,
                              "' has non-finite values");
    return values;
  }
  // The shard holding a float tensor of exactly `shape`.
  const io::SafetensorsReader& checked(const std::string& name,
                                       const std::vector<std::int64_t>& shape) const {
    const io::SafetensorsReader& file = shard(name);
    const io::TensorInfo& t = file.info(name);
    lowbit::detail::require(io::is_float_dtype(t.dtype), file.source(), ": tensor '", name,
                            "' has dtype ", io::dtype_name(t.dtype),
                            ", expected F32, F16, BF16 or F64");
    std::string expected = "[";
    for (std::size_t i = 0; i < shape.size(); ++i)
      expected += (i ? ", " : "") + std::to_string(shape[i]);
    expected += "]";
    lowbit::detail::require(t.shape == shape, file.source(), ": tensor '", name, "' has shape ",
                            t.shape_string(), ", config.json implies ", expected);
    return file;
  }
  // A rows x cols float tensor left in its mapped shard, read by rows
  // (released after each read); checked finite now, a block at a time.
  static MappedRows mapped_rows(const std::shared_ptr<const HfTensors>& tensors,
                                const std::string& name, Index rows, Index cols) {
    const io::SafetensorsReader& file = tensors->checked(name, {rows, cols});
    MappedRows mapped{rows, cols, [tensors, &file, name, cols](Index first, Index count) {
                        const auto begin = std::size_t(first * cols),
                                   size = std::size_t(count * cols);
                        const std::vector<float> v = file.floats(name, begin, size);
                        file.release(name, begin, size);
                        return MatrixF(Eigen::Map<const MatrixF>(v.data(), count, cols));
                      }};
    for (Index first = 0; first < rows; first += kMappedRowsPerBlock)
      lowbit::detail::require(
          mapped.read(first, std::min(kMappedRowsPerBlock, rows - first)).allFinite(),
          file.source(), ": tensor '", name, "' has non-finite values");
    return mapped;
  }
  MatrixF matrix(const std::string& name, Index rows, Index cols) const {
    const std::vector<float> v = read(name, {rows, cols});
    return Eigen::Map<const MatrixF>(v.data(), rows, cols);
  }
  VectorF vector(const std::string& name, Index size) const {
    const std::vector<float> v = read(name, {size});
    return Eigen::Map<const VectorF>(v.data(), size);
  }
  // The tensor's dtype and shape as its shard declares them.
  const io::TensorInfo& info(const std::string& name) const { return shard(name).info(name); }
  // The shard that holds the tensor, for its stored bytes.
  const io::SafetensorsReader& shard_of(const std::string& name) const { return shard(name); }

  // The quantized linear `linear` (its tensors in one shard), of `rows` x
  // `cols` weights, on the bit-plane kernel.
  std::shared_ptr<const Linear> quantized(const std::string& linear, const HfLinearStorage& q,
                                          Index rows, Index cols) const {
    const bool bpdq = q.method == "bpdq";
    const io::SafetensorsReader& file = shard(linear + (bpdq ? ".B" : ".qweight"));
    for (const char* part : {".qzeros", ".scales", ".g_idx", ".c"}) {
      const auto it = shard_.find(linear + part);
      lowbit::detail::require(it == shard_.end() || &shards_[it->second] == &file, index_path_,
                              ": the tensors of linear '", linear,
                              "' are split across shards; expected them in one");
    }
    PackedBitplanes packed =
        bpdq ? pack_bitplanes(io::read_bpdq_linear(file, linear))
             : pack_bitplanes(q.method == "awq"
                                  ? io::read_awq_linear(file, linear)
                                  : io::read_gptq_linear(file, linear, q.bits, q.gptq_v2));
    lowbit::detail::require(packed.rows() == rows && packed.cols() == cols, file.source(),
                            ": linear '", linear, "' holds ", packed.rows(), " x ", packed.cols(),
                            " weights, config.json implies ", rows, " x ", cols);
    return std::make_shared<BitPlaneLinear>(std::move(packed));
  }

 private:
  const io::SafetensorsReader& shard(const std::string& name) const {
    if (shard_.empty()) return shards_[0];
    const auto it = shard_.find(name);
    lowbit::detail::require(it != shard_.end(), index_path_, ": tensor '", name,
                            "' is missing from weight_map");
    return shards_[it->second];
  }
  std::string index_path_;
  std::vector<io::SafetensorsReader> shards_;
  std::map<std::string, std::size_t> shard_;  // tensor name -> index into shards_ (sharded)
};

}  // namespace detail

// Opens the model directory `dir`: reads config.json and the final norm now,
// the embeddings and lm_head by rows when needed (Model::mapped_embedding,
// mapped_classifier) and a layer's weights when asked for it.
inline ModelSource open_hf(const std::string& dir) {
  lowbit::detail::require(std::filesystem::is_directory(dir), dir,
                          ": not a directory (a Hugging Face model is a directory)");
  const detail::HfModel hf = detail::read_hf_config(dir + "/config.json");
  auto tensors = std::make_shared<const detail::HfTensors>(dir);
  ModelSource source;
  Model& m = source.globals;
  m.config = hf.config;
  const Config& c = m.config;
  m.mapped_embedding =
      detail::HfTensors::mapped_rows(tensors, "model.embed_tokens.weight", c.vocab_size, c.dim);
  if (!hf.tied)
    m.mapped_classifier =
        detail::HfTensors::mapped_rows(tensors, "lm_head.weight", c.vocab_size, c.dim);
  m.final_norm = tensors->vector("model.norm.weight", c.dim);
  m.rope = rope_tables(c);
  source.layer = [tensors, hf](int l) {
    const Config& c = hf.config;
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    Layer layer;
    layer.attention_norm = tensors->vector(prefix + "input_layernorm.weight", c.dim);
    layer.ffn_norm = tensors->vector(prefix + "post_attention_layernorm.weight", c.dim);
    const std::array<Index, kLinearsPerLayer> rows = linear_rows(c), cols = linear_cols(c);
    for (LinearKind k : kAllLinears) {
      const std::string name = detail::hf_linear_name(l, k);
      if (hf.quantization.method.empty())
        layer.linears[index(k)] = std::make_shared<FloatLinear>(
            tensors->matrix(name + ".weight", rows[index(k)], cols[index(k)]));
      else
        layer.linears[index(k)] =
            tensors->quantized(name, hf.quantization, rows[index(k)], cols[index(k)]);
      if (hf.bias[index(k)])
        layer.biases[index(k)] = tensors->vector(name + ".bias", rows[index(k)]);
    }
    return layer;
  };
  return source;
}

// quantization_config's quant_method of the model directory ("gptq",
// "awq"), "" for float weights; throws for one open_hf cannot read.
inline std::string hf_quantization_method(const std::string& dir) {
  return detail::read_hf_config(dir + "/config.json").quantization.method;
}

// The whole model in memory.
inline Model load_hf(const std::string& dir) { return load_all(open_hf(dir)); }

}  // namespace lowbit::model
