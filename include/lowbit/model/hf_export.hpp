// Hugging Face GPTQ, AWQ and BPDQ model directories that transformers, vLLM,
// GPTQModel, AutoAWQ and BPDQ's GPTQModel load unchanged, and dequantized
// ones (a plain float model), from a model quantized layer by layer:
//   config.json            the source's (every field kept; intermediate_size is
//                          the padded width, pad_hidden) or, for a llama2.c
//                          model, a LlamaForCausalLM config; plus
//                          quantization_config
//   quantize_config.json   GPTQ, BPDQ: the same quantization fields (AutoGPTQ, GPTQModel)
//   quant_config.json      AWQ: AutoAWQ's own names for them (its older releases
//                          read only this file)
//   model.safetensors      or model-0000k-of-0000n.safetensors and
//                          model.safetensors.index.json past the shard size;
//                          metadata {"format": "pt"} (transformers requires it)
//   tokenizer and generation files of a Hugging Face source, copied.
// "dequantized": no quantization_config and no quantizer file; every linear
// holds its effective weights (effective_weight: the grid dequantized, with
// TACQ's kept weights) in the source's dtype (F32 for llama2.c), so any
// float reader loads it. It saves no storage: it is how results that no
// engine's format holds (TACQ's sparse fp16 part) are evaluated elsewhere.
// Linears are GPTQ v1 ("checkpoint_format": "gptq", io/gptq_format.hpp), AWQ
// GEMM (io/awq_format.hpp) or BPDQ's planes and bf16 coefficients
// (io/bpdq_format.hpp) under Hugging Face names. Every other tensor
// (embeddings, norms, lm_head, biases) is stored in its dtype in the source
// for GPTQ and BPDQ, or F16 for a llama2.c model (F32 on disk; F16 is the activation
// dtype vLLM's GPTQ kernels accept); always F16 for AWQ, whose kernels in
// AutoAWQ and vLLM take only fp16 activations ("torch_dtype": "float16").
// The embeddings and lm_head are never held in float: copied from the
// source's mapped bytes when kept in their dtype, else converted by rows.
//
// v1 stores zero - 1 per field: a zero point of 0 borrows from the next field,
// and only GPTQModel's loader undoes that (AutoGPTQ, vLLM and llama.cpp's
// converter misread such groups). The writer refuses it; quantize with
// GridConfig::positive_zero, which keeps every zero point >= 1.
//
// llama2.c models rotate interleaved RoPE pairs; Hugging Face's Llama rotates
// halves. Their q and k rows are written in the order transformers'
// convert_llama_weights_to_hf.py `permute` gives them: per head, row 2i + j
// goes to j * head_dim / 2 + i. Per-row quantization commutes with that, so
// the quantized rows (codes, scales, zero points) move; g_idx, over input
// columns, does not.
#pragma once

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "lowbit/core/bitplane_weights.hpp"
#include "lowbit/core/error.hpp"
#include "lowbit/core/uniform_weights.hpp"
#include "lowbit/io/awq_format.hpp"
#include "lowbit/io/bpdq_format.hpp"
#include "lowbit/io/checkpoint.hpp"
#include "lowbit/io/file_bytes.hpp"
#include "lowbit/io/gptq_format.hpp"
#include "lowbit/io/safetensors.hpp"
#include "lowbit/model/hf.hpp"
#include "lowbit/model/llama.hpp"
#include "lowbit/quant/bpdq.hpp"

namespace lowbit::model {

// The quantization fields of the checkpoint's configs: AutoGPTQ's and
// GPTQModel's for "gptq", AutoAWQ's for "awq" (bits and group_size; its GEMM
// layout always stores zero points, so "zero_point" is true: a symmetric
// grid's zero point is the constant 2^(bits-1)), BPDQ's GPTQModel's for
// "bpdq" (bits: the planes, written as meta.bpdq.msbits; "bits" there is
// the 8-bit initial grid).
struct HfQuantization {
  std::string format = "gptq";  // "gptq" (v1), "awq" (GEMM), "bpdq" or "dequantized"
  int bits = 4;
  int group_size = 128;  // -1: one group per row
  bool desc_act = false;
  bool sym = false;
  double damp_percent = 0.01;
  bool true_sequential = false;  // o_proj and the MLP calibrated on quantized q/k/v...
  bool static_groups = false;
};

// config.json's quantization_config.
// GPTQ's meta.quantizer: GPTQModel refuses a sym=false v1 checkpoint unless
// it names gptqmodel >= 0.9.0 as a producer (older AutoGPTQ files lost zero
// points of 0). Ours are encoded as that version encodes them and hold no
// zero of 0, so the entry states that compatibility; "lowbit" the producer.
// AWQ's are AutoAWQ's AwqConfig.to_transformers_dict fields.
inline nlohmann::json hf_quantization_config(const HfQuantization& q) {
  if (q.format == "awq")
    return {{"quant_method", "awq"}, {"bits", q.bits},    {"group_size", q.group_size},
            {"zero_point", true},    {"version", "gemm"}, {"modules_to_not_convert", nullptr}};
  if (q.format == "bpdq") {
    const BpdqConfig bpdq;  // what the model method runs (group_quantization.hpp)
    return {{"quant_method", "bpdq"},
            {"checkpoint_format", "bpdq"},
            {"bits", bpdq.init_bits},
            {"group_size", q.group_size},
            {"desc_act", false},
            {"sym", false},
            {"lm_head", false},
            {"pack_dtype", "int32"},
            {"meta",
             {{"quantizer", nlohmann::json::array({"lowbit"})},
              {"bpdq", {{"msbits", q.bits}, {"n_iters", bpdq.iters}, {"alpha", bpdq.ridge}}}}}};
  }
  lowbit::detail::require(q.format == "gptq", "hf_quantization_config: unknown format '", q.format,
                          "' (gptq, awq or bpdq)");
  return {{"quant_method", "gptq"},
          {"checkpoint_format", "gptq"},
          {"bits", q.bits},
          {"group_size", q.group_size},
          {"desc_act", q.desc_act},
          {"sym", q.sym},
          {"damp_percent", q.damp_percent},
          {"true_sequential", q.true_sequential},
          {"static_groups", q.static_groups},
          {"lm_head", false},
          {"pack_dtype", "int32"},
          {"meta", {{"quantizer", nlohmann::json::array({"lowbit", "gptqmodel:0.9.0"})}}}};
}

// The quantizer's own config file beside config.json: its name and content.
inline std::pair<std::string, nlohmann::json> hf_quantizer_config_file(const HfQuantization& q) {
  if (q.format == "awq")
    return {"quant_config.json",
            {{"zero_point", true},
             {"q_group_size", q.group_size},
             {"w_bit", q.bits},
             {"version", "GEMM"},
             {"modules_to_not_convert", nullptr}}};
  return {"quantize_config.json", hf_quantization_config(q)};
}

namespace detail {

// A float as the shortest decimal that reads back as it (1e-05, not 9.99e-06).
inline double shortest_decimal(float value) {
  char text[32];
  const auto end = std::to_chars(text, text + sizeof text, value).ptr;
  return std::stod(std::string(text, end));
}

}  // namespace detail

// config.json of a llama2.c model as a LlamaForCausalLM (Llama 2's
// sentencepiece ids: bos 1, eos 2).
inline nlohmann::json hf_llama_config(const Config& c, bool tied) {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_size", c.dim},
          {"intermediate_size", c.hidden_dim},
          {"num_hidden_layers", c.n_layers},
          {"num_attention_heads", c.n_heads},
          {"num_key_value_heads", c.n_kv_heads},
          {"head_dim", c.head_size()},
          {"max_position_embeddings", c.seq_len},
          {"vocab_size", c.vocab_size},
          {"rms_norm_eps", detail::shortest_decimal(c.norm_eps)},
          {"rope_theta", detail::shortest_decimal(c.rope_theta)},
          {"rope_scaling", nullptr},
          {"hidden_act", "silu"},
          {"attention_bias", false},
          {"mlp_bias", false},
          {"tie_word_embeddings", tied},
          {"bos_token_id", c.bos_token},
          {"eos_token_id", 2},
          {"initializer_range", 0.02},
          {"pretraining_tp", 1},
          {"use_cache", true},
          {"torch_dtype", "float16"}};
}

namespace detail {

inline void copy_row(UniformWeights& to, Index r, const UniformWeights& from, Index s) {
  to.codes.row(r) = from.codes.row(s);
  to.scale.col(r) = from.scale.col(s);
  to.zero.col(r) = from.zero.col(s);
}
inline void copy_row(BitPlaneWeights& to, Index r, const BitPlaneWeights& from, Index s) {
  to.codes.row(r) = from.codes.row(s);
  to.coeffs.col(r) = from.coeffs.col(s);
}
inline void copy_row(MatrixF& to, Index r, const MatrixF& from, Index s) {
  to.row(r) = from.row(s);
}

}  // namespace detail

// The output rows of `w` (heads of equal, even size) from interleaved to
// rotate-half order, as the converter's permute moves weight rows: codes and
// each row's parameters (UniformWeights or BitPlaneWeights), or dense rows.
template <class Weights>
Weights rotate_half_rows(const Weights& w, int heads) {
  const Index head = heads > 0 ? w.rows() / heads : 0, half = head / 2;
  lowbit::detail::require(heads > 0 && head * heads == w.rows() && head % 2 == 0,
                          "rotate_half_rows: ", w.rows(), " rows are not ", heads,
                          " heads of an even size");
  Weights out = w;
  for (Index h = 0; h < heads; ++h)
    for (Index i = 0; i < half; ++i)
      for (Index j = 0; j < 2; ++j) {
        const Index to = h * head + j * half + i, from = h * head + 2 * i + j;
        detail::copy_row(out, to, w, from);
      }
  return out;
}

// A JSON file as the directory holds it (two-space indents, a final newline).
inline std::vector<unsigned char> hf_json_bytes(const nlohmann::json& json) {
  const std::string text = json.dump(2) + "\n";
  return {text.begin(), text.end()};
}

// "5GB", "500MB", "64KiB", "1000": a size in bytes as transformers'
// max_shard_size reads it (KB/MB/GB powers of 1000, KiB/MiB/GiB of 1024).
inline std::uint64_t parse_byte_size(const std::string& text) {
  static const std::pair<const char*, std::uint64_t> units[] = {
      {"GiB", 1ull << 30}, {"MiB", 1ull << 20}, {"KiB", 1ull << 10}, {"GB", 1000000000ull},
      {"MB", 1000000ull},  {"KB", 1000ull},     {"B", 1ull},         {"", 1ull}};
  for (const auto& [unit, factor] : units) {
    const std::size_t n = std::string(unit).size();
    if (text.size() <= n || text.compare(text.size() - n, n, unit) != 0) continue;
    std::uint64_t value = 0;
    const char* end = text.data() + text.size() - n;
    const auto parsed = std::from_chars(text.data(), end, value);
    if (parsed.ec == std::errc() && parsed.ptr == end && value > 0 && value <= UINT64_MAX / factor)
      return value * factor;
  }
  lowbit::detail::fail("'", text,
                       "' is not a size in bytes (a positive integer, optionally with KB, MB, "
                       "GB, KiB, MiB or GiB)");
}

// The safetensors files of a model directory, filled one group of tensors
// at a time (a linear's tensors stay together in one shard): a group that
// would take the shard being filled past `max_shard_bytes` starts a new one
// (a larger group gets its own). Only that shard is held, and only tensors
// added by copy take memory; a full shard is written at once (as
// model-part-K, named when the count is known). groups() is the order and
// grouping given, which is all a merge of slices needs to reproduce the
// shards (quantize-model --layers, lowbit merge).
class HfShardWriter {
 public:
  HfShardWriter(std::uint64_t max_shard_bytes, io::StagedDirectory& out)
      : max_shard_bytes_(max_shard_bytes), out_(out) {}

  void add(io::SafetensorsWriter group) {
    if (shard_.data_bytes() > 0 && shard_.data_bytes() + group.data_bytes() > max_shard_bytes_)
      flush_shard();
    groups_.push_back(group.names());
    shard_.append(std::move(group));
  }

  const std::vector<std::vector<std::string>>& groups() const { return groups_; }

  // Writes the last shard and names the shards: model.safetensors, or
  // model-0000k-of-0000n.safetensors and model.safetensors.index.json.
  void finish() {
    flush_shard();
    const std::size_t n = shard_tensors_.size();
    if (n == 1) return out_.rename(part_name(0), "model.safetensors");
    nlohmann::json weight_map = nlohmann::json::object();
    for (std::size_t s = 0; s < n; ++s) {
      char name[64];
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, n);
      out_.rename(part_name(s), name);
      for (const std::string& tensor : shard_tensors_[s]) weight_map[tensor] = name;
    }
    out_.add(
        "model.safetensors.index.json",
        hf_json_bytes({{"metadata", {{"total_size", total_bytes_}}}, {"weight_map", weight_map}}));
  }

 private:
  static std::string part_name(std::size_t k) { return "model-part-" + std::to_string(k); }

  void flush_shard() {
    if (shard_.names().empty()) return;
    shard_.set_metadata("format", "pt");
    out_.add(part_name(shard_tensors_.size()),
             [&](const io::StagedDirectory::PieceWriter& write) { shard_.write_pieces(write); });
    shard_tensors_.push_back(shard_.names());
    total_bytes_ += shard_.data_bytes();
    shard_ = io::SafetensorsWriter();
  }

  std::uint64_t max_shard_bytes_;
  io::StagedDirectory& out_;
  io::SafetensorsWriter shard_;                          // the shard being filled
  std::vector<std::vector<std::string>> shard_tensors_;  // tensors of the shards written
  std::uint64_t total_bytes_ = 0;                        // their data bytes
  std::vector<std::vector<std::string>> groups_;         // every group added, in order
};

// A GPTQ, AWQ, BPDQ or dequantized model directory, written into `out` as it is filled:
// the globals at construction, then every quantized linear and the rest of
// every layer, then finish(). The output costs at most one shard of memory,
// not the model (HfShardWriter).
class HfDirectoryWriter {
 public:
  // `m`: the model's globals and configuration (hidden width as quantized);
  // `hf_source`: the Hugging Face directory it came from, "" for llama2.c.
  // A slice of the layers that does not start at layer 0 leaves out the
  // globals (`layers`): they come first in the file, so the first slice holds them.
  HfDirectoryWriter(const Model& m, std::string hf_source, HfQuantization quant,
                    std::uint64_t max_shard_bytes, io::StagedDirectory& out, LayerRange layers = {})
      : config_(m.config),
        tied_(m.tied()),
        source_(std::move(hf_source)),
        quant_(quant),
        out_(out),
        shards_(max_shard_bytes, out) {
    if (!source_.empty()) source_tensors_ = std::make_unique<detail::HfTensors>(source_);
    if (!layers.holds_globals()) return;
    add_vocab_matrix("model.embed_tokens.weight", m, embedding_rows);
    add_float("model.norm.weight", m.final_norm);
    if (!tied_) add_vocab_matrix("lm_head.weight", m, output_rows);
  }

  // A GPTQ or AWQ linear.
  void add_linear(int layer, LinearKind kind, const UniformWeights& w) {
    lowbit::detail::require(quant_.format != "bpdq", "HfDirectoryWriter: a bpdq directory ",
                            "holds bit planes, not uniform weights");
    const std::string name = detail::hf_linear_name(layer, kind);
    if (quant_.format == "gptq") require_positive_zeros(name, w);
    const UniformWeights stored = hf_rows(w, kind);
    io::SafetensorsWriter group;
    if (quant_.format == "awq")
      io::add_awq_tensors(group, name, io::pack_awq(stored));
    else
      io::add_gptq_tensors(group, name, io::pack_gptq(stored));
    shards_.add(std::move(group));
  }

  // A BPDQ linear: planes and bf16 coefficients.
  void add_linear(int layer, LinearKind kind, const BitPlaneWeights& w) {
    lowbit::detail::require(quant_.format == "bpdq", "HfDirectoryWriter: a ", quant_.format,
                            " directory holds uniform weights, not bit planes");
    io::SafetensorsWriter group;
    io::add_bpdq_linear(group, detail::hf_linear_name(layer, kind), hf_rows(w, kind),
                        io::Dtype::BF16);
    shards_.add(std::move(group));
  }

  // A dequantized linear: its effective weights (out x in), stored as the
  // source stores the float linear.
  void add_linear(int layer, LinearKind kind, const MatrixF& effective) {
    lowbit::detail::require(quant_.format == "dequantized", "HfDirectoryWriter: a ", quant_.format,
                            " directory holds packed linears, not dense weights");
    add_float(detail::hf_linear_name(layer, kind) + ".weight", hf_rows(effective, kind));
  }

  // The norms and biases of `layer` (the quantized layer: its linears are not read).
  void add_layer_rest(int l, const Layer& layer) {
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    add_float(prefix + "input_layernorm.weight", layer.attention_norm);
    add_float(prefix + "post_attention_layernorm.weight", layer.ffn_norm);
    for (LinearKind kind : kAllLinears)
      if (layer.biases[index(kind)].size() != 0)
        add_float(detail::hf_linear_name(l, kind) + ".bias", layer.biases[index(kind)]);
  }

  // Writes the last shard, names the shards (model.safetensors, or
  // model-0000k-of-0000n.safetensors and their index), the configs and the
  // source's tokenizer files. The directory is then complete, for commit().
  void finish() {
    shards_.finish();
    nlohmann::json config = hf_llama_config(config_, tied_);
    if (!source_.empty()) {
      config = detail::read_json_object(source_ + "/config.json");
      config["intermediate_size"] = config_.hidden_dim;  // padded (zero units)
    }
    if (quant_.format == "awq") config["torch_dtype"] = "float16";
    if (quant_.format == "dequantized") {
      if (source_.empty()) config["torch_dtype"] = "float32";
    } else {
      config["quantization_config"] = hf_quantization_config(quant_);
      const auto [quantizer_file, quantizer_config] = hf_quantizer_config_file(quant_);
      out_.add(quantizer_file, hf_json_bytes(quantizer_config));
    }
    out_.add("config.json", hf_json_bytes(config));
    for (const char* name :
         {"tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
          "added_tokens.json", "vocab.json", "merges.txt", "generation_config.json"}) {
      const std::string path = source_ + "/" + name;
      if (source_.empty() || !std::filesystem::is_regular_file(path)) continue;
      const io::MappedBytes bytes = io::MappedBytes::map(path);
      out_.add(name, std::vector<unsigned char>(bytes.data(), bytes.data() + bytes.size()));
    }
  }

  // The tensors as written, in order and grouped as added.
  const std::vector<std::vector<std::string>>& tensor_groups() const { return shards_.groups(); }

 private:
  // Rows in Hugging Face's order: q and k of a llama2.c model rotate halves.
  template <class Weights>
  Weights hf_rows(const Weights& w, LinearKind kind) const {
    if (config_.rope_style != RopeStyle::interleaved) return w;
    if (kind == LinearKind::wq) return rotate_half_rows(w, config_.n_heads);
    if (kind == LinearKind::wk) return rotate_half_rows(w, config_.n_kv_heads);
    return w;
  }

  static void require_positive_zeros(const std::string& name, const UniformWeights& w) {
    for (Index g = 0; g < w.zero.rows(); ++g)
      for (Index r = 0; r < w.zero.cols(); ++r)
        lowbit::detail::require(w.zero(g, r) >= 1, name, ": zero point ", w.zero(g, r), " (group ",
                                g, ", row ", r,
                                "): GPTQ v1 stores zero - 1, which readers other than "
                                "GPTQModel misread for 0; quantize with positive zero points");
  }

  // A tensor that is not quantized: its dtype in the checkpoint, the source's
  // (AWQ: F16; a llama2.c source: F32 in a dequantized directory, else F16).
  io::Dtype stored_dtype(const std::string& name) const {
    if (source_tensors_ && quant_.format != "awq") return source_tensors_->info(name).dtype;
    return quant_.format == "dequantized" ? io::Dtype::F32 : io::Dtype::F16;
  }

  // The embeddings or lm_head (vocab x dim), without a float copy: the
  // source's bytes when stored as they are (F32, F16 and BF16 convert to
  // float and back exactly), else converted a block of rows at a time.
  void add_vocab_matrix(const std::string& name, const Model& m,
                        MatrixF (*rows)(const Model&, Index, Index)) {
    const io::Dtype dtype = stored_dtype(name);
    const std::vector<std::int64_t> shape{config_.vocab_size, config_.dim};
    io::SafetensorsWriter group;
    if (source_tensors_ && dtype == source_tensors_->info(name).dtype && dtype != io::Dtype::F64) {
      const io::SafetensorsReader& shard = source_tensors_->shard_of(name);
      const io::TensorInfo& t = shard.info(name);
      lowbit::detail::require(t.shape == shape, shard.source(), ": tensor '", name, "' has shape ",
                              t.shape_string(), ", expected [", shape[0], ", ", shape[1], "]");
      group.add_borrowed(name, dtype, shape, shard.data(name), std::size_t(t.end - t.begin));
    } else {
      const Index vocab = config_.vocab_size;
      const std::size_t row_bytes = std::size_t(config_.dim) * io::dtype_size(dtype);
      std::vector<unsigned char> bytes(std::size_t(vocab) * row_bytes);
      for (Index first = 0; first < vocab; first += kMappedRowsPerBlock) {
        const MatrixF block = rows(m, first, std::min(kMappedRowsPerBlock, vocab - first));
        for (Index i = 0; i < block.size(); ++i)  // throws when F16 overflows
          io::detail::stored_value(block.data()[i], dtype, name);
        io::SafetensorsWriter::store_floats(block.data(), std::size_t(block.size()), dtype,
                                            bytes.data() + std::size_t(first) * row_bytes);
      }
      group.add_raw(name, dtype, shape, std::move(bytes));
    }
    shards_.add(std::move(group));
  }

  // A tensor that is not quantized, in stored_dtype.
  template <class Derived>
  void add_float(const std::string& name, const Eigen::MatrixBase<Derived>& values) {
    const io::Dtype dtype = stored_dtype(name);
    const MatrixF m = values;
    for (Index i = 0; i < m.size(); ++i)  // throws when F16 overflows
      io::detail::stored_value(m.data()[i], dtype, name);
    io::SafetensorsWriter group;
    if (values.cols() == 1)
      group.add_vector(name, std::vector<float>(m.data(), m.data() + m.size()), dtype);
    else
      group.add_matrix(name, m, dtype);
    shards_.add(std::move(group));
  }

  Config config_;
  bool tied_;
  std::string source_;
  std::unique_ptr<detail::HfTensors> source_tensors_;  // dtypes of the source's tensors
  HfQuantization quant_;
  io::StagedDirectory& out_;
  HfShardWriter shards_;
};

}  // namespace lowbit::model
