// LLaMA-family models in GGUF, llama.cpp's model file: written from a
// quantized model as llama.cpp loads it, and read back onto the kernels.
//
// What llama.cpp's LLaMA graph expects (llama-arch.cpp, models/llama.cpp,
// llama-model-loader.cpp, 2026-08):
// - general.architecture "llama" and the llama.* hyperparameters; a model
//   without a tokenizer declares tokenizer.ggml.model "none" and
//   llama.vocab_size, and llama.cpp gives it that many dummy tokens (it then
//   runs on token ids).
// - Tensor names token_embd, output_norm, output (absent: tied to
//   token_embd), rope_freqs, and per layer blk.N.{attn_norm, attn_q, attn_k,
//   attn_v, attn_output, ffn_norm, ffn_gate, ffn_down, ffn_up}, each .weight
//   and optionally .bias; a matrix's ggml shape is [in, out].
// - Its LLaMA graph rotates consecutive pairs (rope type "norm"). Hugging
//   Face checkpoints pair row i with row i + head/2 of each q and k head, so
//   llama.cpp's converter reorders their rows (convert_hf_to_gguf.py,
//   LlamaModel.permute): row 2i + s of a head takes row s * head/2 + i. One
//   graph then serves every model here, Qwen2's biases included (the llama
//   graph adds any q/k/v/o and MLP biases it finds).
// - llama3 rope scaling as a rope_freqs tensor: per rotated pair, the factor
//   its frequency is divided by; linear scaling as rope.scaling.type/factor.
//
// Reading takes such a file (ours or llama.cpp's converter's) back onto the
// kernels: block types lowbit decodes as bit planes, IQ4_NL and float types
// as float linears, q and k rows as stored (the model then pairs them as
// llama.cpp does, RopeStyle::interleaved).
//
// Every 2-D tensor is stored in one chosen type as `llama-quantize --pure`
// does, with llama.cpp's per-tensor fallback for rows the type's blocks do
// not divide (group_quantization.hpp ggml_type_for); norms, biases and
// rope_freqs in F32.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "lowbit/core/error.hpp"
#include "lowbit/core/ggml_grid.hpp"
#include "lowbit/io/gguf.hpp"
#include "lowbit/model/group_quantization.hpp"
#include "lowbit/model/llama.hpp"

namespace lowbit::model {

// llama.cpp's name of a layer's linear, without ".weight" / ".bias".
inline std::string gguf_linear_name(int layer, LinearKind kind) {
  static const char* const names[kLinearsPerLayer] = {
      "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_down", "ffn_up"};
  return "blk." + std::to_string(layer) + "." + names[index(kind)];
}

// For each row llama.cpp stores, the model's row it takes: the pair order
// above for q and k of a model with rotate-half RoPE; empty (as stored) else.
inline std::vector<Index> gguf_row_order(const Config& c, LinearKind kind) {
  if (c.rope_style != RopeStyle::half || (kind != LinearKind::wq && kind != LinearKind::wk))
    return {};
  const Index heads = kind == LinearKind::wq ? c.n_heads : c.n_kv_heads;
  const Index size = c.head_size(), half = size / 2;
  std::vector<Index> order(static_cast<std::size_t>(heads * size));
  for (Index h = 0; h < heads; ++h)
    for (Index i = 0; i < half; ++i)
      for (Index s = 0; s < 2; ++s)
        order[static_cast<std::size_t>(h * size + 2 * i + s)] = h * size + s * half + i;
  return order;
}

// llama.cpp's general.file_type (llama.h llama_ftype) for a model stored in
// `type`: the K-quants' "small" mixes, the nearest to one type throughout.
inline std::uint32_t gguf_file_type(GgmlType type) {
  switch (type) {
    case GgmlType::f32:
      return 0;
    case GgmlType::f16:
      return 1;
    case GgmlType::q4_0:
      return 2;
    case GgmlType::q4_1:
      return 3;
    case GgmlType::q8_0:
      return 7;
    case GgmlType::q5_0:
      return 8;
    case GgmlType::q5_1:
      return 9;
    case GgmlType::q2_k:
      return 10;
    case GgmlType::q3_k:
      return 11;
    case GgmlType::q4_k:
      return 14;
    case GgmlType::q5_k:
      return 16;
    case GgmlType::q6_k:
      return 18;
    case GgmlType::iq4_nl:
      return 25;
    case GgmlType::tq2_0:
      return 37;
    default:
      lowbit::detail::fail("GGUF model: no llama.cpp file type for ", ggml_type_name(type));
  }
}

namespace detail {

// Rows of a row-major byte image (row_bytes each) in `order` (empty: as is).
inline std::vector<std::uint8_t> reorder_rows(std::vector<std::uint8_t> bytes,
                                              std::size_t row_bytes,
                                              const std::vector<Index>& order) {
  if (order.empty()) return bytes;
  std::vector<std::uint8_t> out(bytes.size());
  for (std::size_t r = 0; r < order.size(); ++r)
    std::copy_n(bytes.begin() + static_cast<std::ptrdiff_t>(order[r] * row_bytes), row_bytes,
                out.begin() + static_cast<std::ptrdiff_t>(r * row_bytes));
  return out;
}

inline MatrixF reorder_rows(const MatrixF& m, const std::vector<Index>& order) {
  if (order.empty()) return m;
  MatrixF out(m.rows(), m.cols());
  for (std::size_t r = 0; r < order.size(); ++r) out.row(Index(r)) = m.row(order[r]);
  return out;
}

inline void add_blocks(io::GgufWriter& out, const std::string& name, const GgmlWeights& w,
                       const std::vector<Index>& order) {
  const std::vector<std::uint8_t> bytes =
      reorder_rows(io::pack_ggml_blocks(w), ggml_row_bytes(w.type, w.cols()), order);
  out.add_tensor(name, w.type, {w.cols(), w.rows()}, bytes.data(), bytes.size());
}

inline void add_vector(io::GgufWriter& out, const std::string& name, const VectorF& v) {
  out.add_tensor(name, GgmlType::f32, {v.size()}, v.data(),
                 static_cast<std::size_t>(v.size()) * sizeof(float));
}

// The embeddings or output weights of `m` (vocab x dim; `rows` reads them,
// held or mapped) in `type` by llama.cpp's quantizer without an importance
// matrix (llama-quantize has none for them), with the fallback; a block of
// rows at a time (the quantizer's rows are independent), so only the
// quantized bytes are held whole.
inline void add_quantized_matrix(io::GgufWriter& out, const std::string& name, const Model& m,
                                 MatrixF (*rows)(const Model&, Index, Index), GgmlType type) {
  const Index vocab = m.config.vocab_size, dim = m.config.dim;
  const GgmlType stored = ggml_type_for(type, dim);
  const std::size_t row_bytes = ggml_row_bytes(stored, dim);
  std::vector<std::uint8_t> bytes(std::size_t(vocab) * row_bytes);
  for (Index first = 0; first < vocab; first += kMappedRowsPerBlock) {
    const MatrixF block = rows(m, first, std::min(kMappedRowsPerBlock, vocab - first));
    std::uint8_t* at = bytes.data() + std::size_t(first) * row_bytes;
    if (stored == GgmlType::f16) {  // as GgufWriter::add_matrix stores it
      for (Index i = 0; i < block.size(); ++i) {
        const std::uint16_t h = float_to_half(block.data()[i]);
        std::memcpy(at + std::size_t(i) * sizeof h, &h, sizeof h);
      }
    } else {
      try {
        const std::vector<std::uint8_t> part =
            io::pack_ggml_blocks(quantize_ggml(block, {stored, {}}).weights);
        std::copy(part.begin(), part.end(), at);
      } catch (const Error& e) {  // its rows count from the block's first
        lowbit::detail::fail(name, ", rows ", first, "..", first + block.rows() - 1, ": ",
                             e.what());
      }
    }
  }
  out.add_tensor(name, stored, {dim, vocab}, bytes.data(), bytes.size());
}

// The llama3 rope scaling as llama.cpp's rope_freqs: each rotated pair's
// frequency divided by its scaled one.
inline VectorF llama3_rope_factors(const Config& c) {
  const int half = c.head_size() / 2;
  VectorF factors(half);
  for (int i = 0; i < half; ++i) {
    const float freq = 1.0f / std::pow(c.rope_theta, 2.0f * float(i) / float(c.head_size()));
    factors(i) = freq / llama3_frequency(freq, c.rope_scaling);
  }
  return factors;
}

// token_embd, output (unless tied), output_norm and rope_freqs (llama3), in
// file order: matrix(name, rows) for the embeddings (rows: embedding_rows or
// output_rows), vector(name, v) for the rest.
template <class OnMatrix, class OnVector>
void visit_gguf_globals(const Model& globals, const OnMatrix& matrix, const OnVector& vector) {
  matrix("token_embd.weight", embedding_rows);
  if (!globals.tied()) matrix("output.weight", output_rows);
  vector("output_norm.weight", globals.final_norm);
  if (globals.config.rope_scaling.type == RopeScaling::Type::llama3)
    vector("rope_freqs.weight", llama3_rope_factors(globals.config));
}

// A layer's norms, then the biases it has (rows in llama.cpp's order), as
// vector(name, v) in file order.
template <class OnVector>
void visit_gguf_layer_vectors(const Config& c, int layer, const Layer& l, const OnVector& vector) {
  const std::string block = "blk." + std::to_string(layer) + ".";
  vector(block + "attn_norm.weight", l.attention_norm);
  vector(block + "ffn_norm.weight", l.ffn_norm);
  for (LinearKind kind : kAllLinears) {
    const VectorF& bias = l.biases[index(kind)];
    if (bias.size() == 0) continue;
    const std::vector<Index> order = gguf_row_order(c, kind);
    VectorF stored = bias;
    for (std::size_t r = 0; r < order.size(); ++r) stored(Index(r)) = bias(order[r]);
    vector(gguf_linear_name(layer, kind) + ".bias", stored);
  }
}

}  // namespace detail

// The metadata of a model stored in `type` (general.*, llama.*); the
// tokenizer's keys come from add_gguf_tokenizer or add_gguf_no_tokenizer.
inline void add_gguf_metadata(io::GgufWriter& out, const Config& c, GgmlType type,
                              const std::string& name) {
  out.set("general.architecture", "llama");
  out.set("general.name", name);
  out.set("general.file_type", gguf_file_type(type));
  out.set("general.quantization_version", std::uint32_t{2});
  auto u32 = [](int v) { return static_cast<std::uint32_t>(v); };
  out.set("llama.vocab_size", u32(c.vocab_size));
  out.set("llama.context_length", u32(c.seq_len));
  out.set("llama.embedding_length", u32(c.dim));
  out.set("llama.block_count", u32(c.n_layers));
  out.set("llama.feed_forward_length", u32(c.hidden_dim));
  out.set("llama.attention.head_count", u32(c.n_heads));
  out.set("llama.attention.head_count_kv", u32(c.n_kv_heads));
  out.set("llama.attention.key_length", u32(c.head_size()));
  out.set("llama.attention.value_length", u32(c.head_size()));
  out.set("llama.attention.layer_norm_rms_epsilon", c.norm_eps);
  out.set("llama.rope.freq_base", c.rope_theta);
  out.set("llama.rope.dimension_count", u32(c.head_size()));
  if (c.rope_scaling.type == RopeScaling::Type::linear) {
    out.set("llama.rope.scaling.type", "linear");
    out.set("llama.rope.scaling.factor", c.rope_scaling.factor);
  }
}

// No tokenizer: llama.cpp gives the model llama.vocab_size dummy tokens and
// runs it on token ids.
inline void add_gguf_no_tokenizer(io::GgufWriter& out) { out.set("tokenizer.ggml.model", "none"); }

// token_embd, output (unless tied), output_norm and rope_freqs (llama3).
inline void add_gguf_globals(io::GgufWriter& out, const Model& globals, GgmlType type) {
  detail::visit_gguf_globals(
      globals,
      [&](const std::string& name, MatrixF (*rows)(const Model&, Index, Index)) {
        detail::add_quantized_matrix(out, name, globals, rows, type);
      },
      [&](const std::string& name, const VectorF& v) { detail::add_vector(out, name, v); });
}

// A quantized linear: its ggml blocks, or the fp16 weights of llama.cpp's
// F16 fallback.
inline void add_gguf_linear(io::GgufWriter& out, const Config& c, int layer, LinearKind kind,
                            const QuantizedLinear& q) {
  const std::string name = gguf_linear_name(layer, kind) + ".weight";
  const std::vector<Index> order = gguf_row_order(c, kind);
  if (q.ggml) return detail::add_blocks(out, name, *q.ggml, order);
  const auto* half = dynamic_cast<const FloatLinear*>(q.linear.get());
  lowbit::detail::require(half != nullptr && q.bits_per_weight == 16.0, "GGUF model: ", name,
                          " has no ggml blocks: quantize with a ggml method");
  out.add_matrix(name, detail::reorder_rows(half->weight(), order), GgmlType::f16);
}

// A layer's norms and biases (its linears go through add_gguf_linear).
inline void add_gguf_layer_vectors(io::GgufWriter& out, const Config& c, int layer,
                                   const Layer& l) {
  detail::visit_gguf_layer_vectors(c, layer, l, [&](const std::string& name, const VectorF& v) {
    detail::add_vector(out, name, v);
  });
}

// Every tensor of a model's GGUF, declared before any is written so that the
// file streams (io::GgufWriter::start): the globals as add_gguf_globals adds
// them; then per layer its linears as add_gguf_linear adds a model quantized
// into `type` (each in ggml_type_for its rows), in the order
// SequentialQuantizer finishes them (linear_groups()), and its vectors as
// add_gguf_layer_vectors adds them. `sample`: any layer of the model, whose
// norm sizes and biases stand for every layer's. The order is the one
// quantize-model wrote before it streamed, so its files are unchanged.
// `layers`: only those layers, and the globals only with layer 0 (a slice).
inline void declare_gguf_tensors(io::GgufWriter& out, const Model& globals, GgmlType type,
                                 const Layer& sample, LayerRange layers = {}) {
  const Config& c = globals.config;
  const auto declare_vector = [&](const std::string& name, const VectorF& v) {
    out.declare_tensor(name, GgmlType::f32, {v.size()});
  };
  if (layers.holds_globals())
    detail::visit_gguf_globals(
        globals,
        [&](const std::string& name, MatrixF (*)(const Model&, Index, Index)) {
          out.declare_tensor(name, ggml_type_for(type, c.dim), {c.dim, c.vocab_size});
        },
        declare_vector);
  const std::array<Index, kLinearsPerLayer> rows = linear_rows(c), cols = linear_cols(c);
  for (int l = layers.begin; l < std::min(layers.end, c.n_layers); ++l) {
    for (const LinearGroup& group : linear_groups())
      for (LinearKind kind : group.kinds) {
        const std::size_t k = index(kind);
        out.declare_tensor(gguf_linear_name(l, kind) + ".weight", ggml_type_for(type, cols[k]),
                           {cols[k], rows[k]});
      }
    detail::visit_gguf_layer_vectors(c, l, sample, declare_vector);
  }
}

namespace detail {

inline int gguf_count(const io::GgufReader& f, const std::string& key) {
  const std::uint32_t v = f.get<std::uint32_t>(key);
  lowbit::detail::require(v <= INT32_MAX, f.source(), ": key '", key, "' = ", v, " is too large");
  return static_cast<int>(v);
}

inline Config gguf_config(const io::GgufReader& f) {
  const std::string arch = f.get<std::string>("general.architecture");
  lowbit::detail::require(arch == "llama", f.source(), ": general.architecture is '", arch,
                          "'; lowbit reads 'llama' models");
  lowbit::detail::require(!f.contains_tensor("rope_freqs.weight"), f.source(),
                          ": rope_freqs (llama3 rope scaling) is not supported when reading");
  Config c;
  c.dim = gguf_count(f, "llama.embedding_length");
  c.hidden_dim = gguf_count(f, "llama.feed_forward_length");
  c.n_layers = gguf_count(f, "llama.block_count");
  c.n_heads = gguf_count(f, "llama.attention.head_count");
  c.n_kv_heads = f.contains("llama.attention.head_count_kv")
                     ? gguf_count(f, "llama.attention.head_count_kv")
                     : c.n_heads;
  c.seq_len = gguf_count(f, "llama.context_length");
  c.vocab_size = static_cast<int>(f.tensor("token_embd.weight").rows());
  c.norm_eps = f.get<float>("llama.attention.layer_norm_rms_epsilon");
  if (f.contains("llama.rope.freq_base")) c.rope_theta = f.get<float>("llama.rope.freq_base");
  if (f.contains("tokenizer.ggml.bos_token_id"))
    c.bos_token = gguf_count(f, "tokenizer.ggml.bos_token_id");
  if (f.contains("llama.attention.key_length")) {
    c.head_dim = gguf_count(f, "llama.attention.key_length");
    lowbit::detail::require(
        !f.contains("llama.attention.value_length") ||
            gguf_count(f, "llama.attention.value_length") == c.head_dim,
        f.source(), ": attention.value_length differs from key_length; lowbit needs them equal");
  }
  c.rope_style = RopeStyle::interleaved;
  if (f.contains("llama.rope.scaling.type")) {
    const std::string type = f.get<std::string>("llama.rope.scaling.type");
    lowbit::detail::require(type == "none" || type == "linear", f.source(), ": rope.scaling.type '",
                            type, "' is not supported (none, linear)");
    if (type == "linear") {
      c.rope_scaling.type = RopeScaling::Type::linear;
      c.rope_scaling.factor = f.get<float>("llama.rope.scaling.factor");
    }
  }
  validate_config(c, f.source());
  return c;
}

inline MatrixF gguf_matrix(const io::GgufReader& f, const std::string& name, Index rows,
                           Index cols) {
  const io::GgufTensorInfo& t = f.tensor(name);
  lowbit::detail::require(t.shape.size() == 2 && t.rows() == rows && t.cols() == cols, f.source(),
                          ": tensor '", name, "' has shape ", t.shape_string(), ", expected [",
                          cols, ", ", rows, "]");
  return f.matrix(name);
}

inline VectorF gguf_vector(const io::GgufReader& f, const std::string& name, Index size) {
  const io::GgufTensorInfo& t = f.tensor(name);
  lowbit::detail::require(t.shape.size() == 1 && t.cols() == size, f.source(), ": tensor '", name,
                          "' has shape ", t.shape_string(), ", expected [", size, "]");
  return f.matrix(name).transpose();
}

inline std::shared_ptr<const Linear> gguf_linear(const io::GgufReader& f, const std::string& name,
                                                 Index rows, Index cols) {
  const io::GgufTensorInfo& t = f.tensor(name);
  const GgmlBlockFormat* format = find_ggml_block_format(t.type);
  if (format == nullptr || format->table())
    return std::make_shared<FloatLinear>(gguf_matrix(f, name, rows, cols));
  lowbit::detail::require(t.shape.size() == 2 && t.rows() == rows && t.cols() == cols, f.source(),
                          ": tensor '", name, "' has shape ", t.shape_string(), ", expected [",
                          cols, ", ", rows, "]");
  return std::make_shared<BitPlaneLinear>(pack_bitplanes(to_bitplanes(f.blocks(name))));
}

}  // namespace detail

// A LLaMA-architecture GGUF as a model read one layer at a time.
inline ModelSource open_gguf(const std::string& path) {
  auto file = std::make_shared<const io::GgufReader>(path);
  const io::GgufReader& f = *file;
  ModelSource source;
  Config& c = source.globals.config;
  c = detail::gguf_config(f);
  source.globals.token_embedding = detail::gguf_matrix(f, "token_embd.weight", c.vocab_size, c.dim);
  if (f.contains_tensor("output.weight"))
    source.globals.classifier = detail::gguf_matrix(f, "output.weight", c.vocab_size, c.dim);
  source.globals.final_norm = detail::gguf_vector(f, "output_norm.weight", c.dim);
  source.globals.rope = rope_tables(c);
  source.layer = [file, c](int l) {
    const std::string block = "blk." + std::to_string(l) + ".";
    Layer layer;
    layer.attention_norm = detail::gguf_vector(*file, block + "attn_norm.weight", c.dim);
    layer.ffn_norm = detail::gguf_vector(*file, block + "ffn_norm.weight", c.dim);
    const std::array<Index, kLinearsPerLayer> rows = linear_rows(c), cols = linear_cols(c);
    for (LinearKind kind : kAllLinears) {
      const std::string name = gguf_linear_name(l, kind);
      const std::size_t k = index(kind);
      layer.linears[k] = detail::gguf_linear(*file, name + ".weight", rows[k], cols[k]);
      if (file->contains_tensor(name + ".bias"))
        layer.biases[k] = detail::gguf_vector(*file, name + ".bias", rows[k]);
    }
    return layer;
  };
  return source;
}

}  // namespace lowbit::model
